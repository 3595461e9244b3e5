"""A SentencePiece-style BPE tokenizer (Gemma, EmbeddingGemma, Llama 2 style) as a ``torch.jit.script`` module.

Between the added tokens (:class:`scripted.ScriptedTokenizer`), each stretch's spaces become the replacement
character (``Prepend`` before it when the normalizer has one) and the stretch is one BPE word (``spbpe_tables``):
characters to ids, byte fallback, unknown fusing, then merges on ids by rank. A boundary before a run of spaces is
one no merge can cross when no merge joins the character before it to a following space (read off the merges at
export), so the word is merged piece by piece between such boundaries, which gives the same ids in about linear
rather than quadratic time and lets truncation stop early.
"""
# No ``from __future__ import annotations``: TorchScript reads the class annotations below as types.
from typing import Dict, List

import torch

from .scripted import ScriptedTokenizer
from .spbpe_tables import SentencePieceBPETables


class SentencePieceBPETokenizer(ScriptedTokenizer):
    vocab: Dict[str, int]
    merges: Dict[int, int]
    byte_ids: List[int]
    prepend: List[str]
    joins_space: Dict[str, bool]

    def __init__(self, tables: SentencePieceBPETables):
        super().__init__(tables)
        self.vocab = dict(tables.vocab)
        self.merges = dict(tables.merges)
        self.width = tables.width
        self.byte_ids = list(tables.byte_ids)
        self.unk_id = tables.unk_id
        self.fuse_unk = tables.fuse_unk
        self.ignore_merges = tables.ignore_merges
        self.space = tables.space
        self.replace_space = tables.replace_space
        self.prepend = list(tables.prepend)
        self.chunked = tables.chunked
        self.joins_space = dict(tables.joins_space)
        self.symbol_end = ">"  # the last character of a byte or unknown token's string
        self.blank = " "

    def _word(self, chars: List[str], ids: List[int]) -> None:
        """One word (its characters) through the library's merge_word onto ``ids``."""
        symbols: List[int] = []
        pending = False  # an unknown token not written yet (fused with the next unknown character)
        for char in chars:
            found = self.vocab.get(char, -1)
            if found >= 0:
                if pending:
                    symbols.append(self.unk_id)
                    pending = False
                symbols.append(found)
                continue
            if len(self.byte_ids) > 0:
                fallback: List[int] = []
                for j in range(len(char)):
                    fallback.append(self.byte_ids[ord(char[j])])
                if min(fallback) >= 0:
                    symbols.extend(fallback)  # the library leaves a pending unknown pending here
                    continue
            if self.unk_id >= 0:
                if pending and not self.fuse_unk:
                    symbols.append(self.unk_id)
                pending = True
        if pending:
            symbols.append(self.unk_id)
        width = self.width
        while len(symbols) > 1:
            best = -1
            at = -1
            for i in range(len(symbols) - 1):
                value = self.merges.get(symbols[i] * width + symbols[i + 1], -1)
                if value >= 0 and (best < 0 or value < best):
                    best = value
                    at = i
            if at < 0:
                break
            symbols = symbols[:at] + [best % width] + symbols[at + 2:]
        ids.extend(symbols)

    def _span(self, text: str, start: int, end: int, ids: List[int]) -> None:
        chars = self._chars(text, start, end)[0]
        if len(chars) == 0:
            return
        if self.replace_space:
            for k in range(len(chars)):
                if chars[k] == self.blank:
                    chars[k] = self.space
        if len(self.prepend) > 0:
            chars = self.prepend + chars
        if self.ignore_merges:
            whole = self.vocab.get("".join(chars), -1)
            if whole >= 0:
                ids.append(whole)
                return
        if not self.chunked:
            self._word(chars, ids)
            return
        n = len(chars)
        pos = 0
        while pos < n and len(ids) < self.budget:
            stop = pos
            while stop < n:
                while stop < n and chars[stop] == self.space:
                    stop += 1
                while stop < n and chars[stop] != self.space:
                    stop += 1
                if stop >= n:
                    break
                last = chars[stop - 1]
                if last not in self.vocab:
                    if self.unk_id < 0:
                        continue  # it may write nothing (dropped): the symbol before the spaces is not known here
                    last = self.symbol_end
                if last not in self.joins_space:
                    break  # no merge crosses into the spaces that follow
            self._word(chars[pos:stop], ids)
            pos = stop


def build_spbpe(tables: SentencePieceBPETables) -> torch.jit.ScriptModule:
    return torch.jit.script(SentencePieceBPETokenizer(tables))
