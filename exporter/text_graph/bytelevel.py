"""A byte-level BPE tokenizer (RoBERTa, ModernBERT style) as a ``torch.jit.script`` module.

Between the added tokens (:class:`scripted.ScriptedTokenizer`), each stretch is split with GPT-2's pattern, run
here over the characters' classes (``bytelevel_tables``; letter 0, number 1, other 2, space 3, as literals: scripted
code cannot read module globals): a contraction (``'s 't 're 've 'm 'll 'd``), an optional space and a run of one
class, spaces not followed by a non-space, spaces. Each piece's UTF-8 bytes become the library's byte characters and
are merged by BPE rank, lowest first and leftmost among equals, as the library merges them.
"""
# No ``from __future__ import annotations``: TorchScript reads the class annotations below as types.
from typing import Dict, List

import torch

from .bytelevel_tables import ByteLevelTables
from .scripted import ScriptedTokenizer


class ByteLevelBPETokenizer(ScriptedTokenizer):
    ascii_class: List[int]
    char_class: Dict[int, int]
    byte_map: List[str]
    vocab: Dict[str, int]
    merges: Dict[str, int]

    def __init__(self, tables: ByteLevelTables):
        super().__init__(tables)
        self.ascii_class = list(tables.ascii_class)
        self.char_class = dict(tables.char_class)
        self.byte_map = list(tables.byte_map)
        self.vocab = dict(tables.vocab)
        self.merges = dict(tables.merges)
        self.add_prefix_space = tables.add_prefix_space
        self.ignore_merges = tables.ignore_merges
        self.unk_id = tables.unk_id
        self.space = " "

    def _bpe(self, chars: List[str], ids: List[int]) -> None:
        """One piece (its characters as UTF-8 strings) through the byte map and the merges onto ``ids``."""
        symbols: List[str] = []
        for char in chars:
            for j in range(len(char)):
                symbols.append(self.byte_map[ord(char[j])])
        if self.ignore_merges:
            whole = self.vocab.get("".join(symbols), -1)
            if whole >= 0:
                ids.append(whole)
                return
        while len(symbols) > 1:
            best = -1
            at = -1
            for i in range(len(symbols) - 1):
                rank = self.merges.get(symbols[i] + " " + symbols[i + 1], -1)
                if rank >= 0 and (best < 0 or rank < best):
                    best = rank
                    at = i
            if at < 0:
                break
            symbols = symbols[:at] + [symbols[at] + symbols[at + 1]] + symbols[at + 2:]
        for symbol in symbols:
            found = self.vocab.get(symbol, self.unk_id)
            if found >= 0:
                ids.append(found)

    def _span(self, text: str, start: int, end: int, ids: List[int]) -> None:
        chars, cps = self._chars(text, start, end)
        kinds: List[int] = []
        for cp in cps:
            kinds.append(self.ascii_class[cp] if cp < 0x80 else self.char_class.get(cp, 2))
        if self.add_prefix_space and (len(cps) == 0 or cps[0] != 32) and len(cps) > 0:
            chars.insert(0, self.space)
            cps.insert(0, 32)
            kinds.insert(0, self.ascii_class[32])
        n = len(cps)
        pos = 0
        while pos < n and len(ids) < self.budget:
            stop = pos + 1
            c = cps[pos]
            contraction = False
            if c == 39 and pos + 1 < n:  # 's 't 'm 'd, 're 've 'll
                c1 = cps[pos + 1]
                if c1 == 115 or c1 == 116 or c1 == 109 or c1 == 100:
                    stop = pos + 2
                    contraction = True
                elif pos + 2 < n:
                    c2 = cps[pos + 2]
                    if (c1 == 114 and c2 == 101) or (c1 == 118 and c2 == 101) or (c1 == 108 and c2 == 108):
                        stop = pos + 3
                        contraction = True
            if not contraction:
                first = pos
                if c == 32 and pos + 1 < n and kinds[pos + 1] != 3:
                    first = pos + 1  # an optional space before a run of letters, numbers or others
                kind = kinds[first]
                if kind != 3:
                    stop = first + 1
                    while stop < n and kinds[stop] == kind:
                        stop += 1
                else:
                    stop = pos
                    while stop < n and kinds[stop] == 3:
                        stop += 1
                    if stop < n and stop - pos > 1:
                        stop -= 1  # spaces not followed by a non-space leave the last one to what follows
            self._bpe(chars[pos:stop], ids)
            pos = stop


def build_bytelevel(tables: ByteLevelTables) -> torch.jit.ScriptModule:
    return torch.jit.script(ByteLevelBPETokenizer(tables))
