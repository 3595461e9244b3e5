"""A Unigram tokenizer (XLM-R, multilingual-e5, bge-m3 style) as a ``torch.jit.script`` module.

Between the added tokens (:class:`scripted.ScriptedTokenizer`), each stretch is normalized as the library's
``Precompiled`` does it (grapheme by grapheme: one under 6 bytes becomes the value of the shortest charsmap key it
starts with, else each character its own key's value), runs of spaces collapse to one, ``Metaspace`` writes spaces as
the replacement character, prepends one and splits before each, and each piece is segmented by Viterbi over the
vocabulary's scores exactly as the library's optimized search does (first path kept on equal scores, an unknown
character scored ``min_score - 10``, neighbouring unknown pieces fused, then byte fallback). Grapheme classes are the
bit literals of ``charsmap`` (JOINS 1, CONTROL 2, PREPEND 4, PICTOGRAPHIC 8, Hangul L 16 V 32 T 64 LV 128 LVT 256,
CONSONANT 512, LINKER 1024, INCB_EXTEND 2048): scripted code cannot read module globals.
"""
# No ``from __future__ import annotations``: TorchScript reads the class annotations below as types.
from typing import Dict, List

import torch

from .scripted import ScriptedTokenizer
from .unigram_tables import UnigramTables


class UnigramTokenizer(ScriptedTokenizer):
    single: Dict[int, str]
    multi: Dict[str, str]
    classes: Dict[int, int]
    split_whitespace: Dict[int, bool]
    trie: Dict[str, int]
    scores: List[float]
    ascii_plain: List[bool]
    byte_ids: List[int]

    def __init__(self, tables: UnigramTables):
        super().__init__(tables)
        self.single = dict(tables.single)
        self.multi = dict(tables.multi)
        self.classes = dict(tables.classes)
        self.precompiled = tables.precompiled
        self.collapse_spaces = tables.collapse_spaces
        self.whitespace_split = tables.whitespace_split
        self.split_whitespace = dict(tables.split_whitespace)
        self.replacement = tables.replacement
        self.prepend = tables.prepend
        self.split = tables.split
        # The library's trie as one dict: every piece and every proper prefix of one, to (id + 1) * 2 + (1 when
        # a longer piece starts with it): the search stops where no piece goes on, as the trie's does.
        trie: Dict[str, int] = {}
        for piece, index in tables.vocab.items():
            if not piece:
                continue
            trie[piece] = (index + 1) * 2 + (trie.get(piece, 0) & 1)
            for k in range(1, len(piece)):
                head = piece[:k]
                trie[head] = trie.get(head, 0) | 1
        self.trie = trie
        # ASCII characters the normalizer keeps as they are, each its own grapheme (nothing ASCII joins them).
        self.ascii_plain = [c not in tables.single and tables.classes.get(c, 0) == 0 for c in range(128)]
        self.scores = list(tables.scores)
        self.unk_id = tables.unk_id
        self.unk_score = tables.unk_score
        self.byte_ids = list(tables.byte_ids)
        self.space = " "

    def _joins(self, p: int, d: int, pc: int, dc: int, state: int, conjunct: int) -> bool:
        """Whether ``d`` (class ``dc``) continues the grapheme that ends in ``p`` (UAX #29 in the library's order)."""
        if p == 13 and d == 10:
            return True
        if (pc & 2) != 0 or (dc & 2) != 0:
            return False
        if (pc & 16) != 0 and (dc & (16 | 32 | 128 | 256)) != 0:
            return True
        if (pc & (32 | 128)) != 0 and (dc & (32 | 64)) != 0:
            return True
        if (pc & (64 | 256)) != 0 and (dc & 64) != 0:
            return True
        if (dc & 1) != 0 or (pc & 4) != 0:
            return True
        if conjunct == 2 and (dc & 512) != 0:
            return True
        return p == 0x200D and (dc & 8) != 0 and state == 2

    def _normalize(self, chars: List[str], cps: List[int]) -> str:
        """The Precompiled normalizer, grapheme by grapheme."""
        out: List[str] = []
        n = len(cps)
        i = 0
        while i < n:
            pc = self.classes.get(cps[i], 0)
            state = 1 if (pc & 8) != 0 else 0  # GB11: 1 after a pictograph and extends, 2 after its ZWJ
            conjunct = 1 if (pc & 512) != 0 else 0  # GB9c: 1 after a consonant and extends, 2 once a linker came
            size = len(chars[i])
            j = i + 1
            while j < n:
                dc = self.classes.get(cps[j], 0)
                if dc == 0 and (pc & 4) == 0:  # joins nothing (the usual case, decided without the call)
                    break
                if not self._joins(cps[j - 1], cps[j], pc, dc, state, conjunct):
                    break
                if (dc & 512) != 0:
                    conjunct = 1
                elif conjunct > 0 and (dc & 1024) != 0:
                    conjunct = 2
                elif (dc & 2048) == 0:
                    conjunct = 0
                if (dc & 8) != 0:
                    state = 1
                elif state == 1 and cps[j] == 0x200D:
                    state = 2
                elif not (state == 1 and (dc & 1) != 0):
                    state = 0
                size += len(chars[j])
                pc = dc
                j += 1
            done = False
            if j - i > 1 and size < 6:
                if cps[i] in self.single:
                    out.append(self.single[cps[i]])
                    done = True
                else:
                    prefix = chars[i]
                    for k in range(i + 1, j):
                        prefix = prefix + chars[k]
                        if prefix in self.multi:
                            out.append(self.multi[prefix])
                            done = True
                            break
            if not done:
                for k in range(i, j):
                    out.append(self.single.get(cps[k], chars[k]))
            i = j
        return "".join(out)

    def _collapse(self, text: str) -> str:
        """Replace(" {2,}" -> " ")."""
        if text.find("  ") < 0:
            return text
        parts: List[str] = []
        n = len(text)
        i = 0
        while i < n:
            j = text.find("  ", i)
            if j < 0:
                parts.append(text[i:])
                break
            parts.append(text[i:j + 1])
            k = j + 2
            while k < n and text[k] == " ":
                k += 1
            i = k
        return "".join(parts)

    def _pieces(self, text: str, first: bool, pieces: List[str]) -> None:
        """Metaspace: spaces written as the replacement, one prepended, split before each replacement."""
        if len(text) == 0:
            return
        text = text.replace(self.space, self.replacement)
        if (self.prepend == 1 or (self.prepend == 2 and first)) and not text.startswith(self.replacement):
            text = self.replacement + text
        if not self.split:
            pieces.append(text)
            return
        start = 0
        size = len(self.replacement)
        at = text.find(self.replacement, size)
        while at >= 0:
            pieces.append(text[start:at])
            start = at
            at = text.find(self.replacement, at + size)
        pieces.append(text[start:])

    def _viterbi(self, s: str, ids: List[int]) -> None:
        """The library's optimized Unigram search over the UTF-8 string ``s``, its ids appended to ``ids``."""
        n = len(s)
        best = [0.0] * (n + 1)
        back = [-1] * (n + 1)
        token = [0] * (n + 1)
        pos = 0
        while pos < n:
            b = ord(s[pos])
            step = 1 if b < 0x80 else 2 if b < 0xE0 else 3 if b < 0xF0 else 4
            base = best[pos]
            single = False
            end = pos + step
            while True:
                node = self.trie.get(s[pos:end], 0)
                if node > 1:
                    found = (node >> 1) - 1
                    score = self.scores[found] + base
                    if back[end] < 0 or score > best[end]:
                        best[end] = score
                        back[end] = pos
                        token[end] = found
                    if end - pos == step:
                        single = True
                if end >= n or (node & 1) == 0:
                    break
                b = ord(s[end])
                end += 1 if b < 0x80 else 2 if b < 0xE0 else 3 if b < 0xF0 else 4
            if not single:
                end = pos + step
                score = self.unk_score + base
                if back[end] < 0 or score > best[end]:
                    best[end] = score
                    back[end] = pos
                    token[end] = self.unk_id
            pos += step
        starts: List[int] = []
        ends: List[int] = []
        found_ids: List[int] = []
        end = n
        while end > 0:
            starts.append(back[end])
            ends.append(end)
            found_ids.append(token[end])
            end = back[end]
        k = len(starts) - 1
        while k >= 0:
            if found_ids[k] != self.unk_id:
                ids.append(found_ids[k])
                k -= 1
                continue
            first = starts[k]
            while k >= 0 and found_ids[k] == self.unk_id:  # unknown pieces side by side are one
                k -= 1
            piece = s[first:ends[k + 1]]
            known = (self.trie.get(piece, 0) >> 1) - 1
            if known >= 0:
                ids.append(known)
            elif len(self.byte_ids) > 0:
                bytes_ids: List[int] = []
                for b in range(len(piece)):
                    bytes_ids.append(self.byte_ids[ord(piece[b])])
                if min(bytes_ids) >= 0:
                    ids.extend(bytes_ids)
                else:
                    ids.append(self.unk_id)
            else:
                ids.append(self.unk_id)

    def _plain(self, text: str, start: int, end: int) -> bool:
        """Whether the bytes are ASCII the normalizer keeps as they are (then no grapheme needs looking at)."""
        for i in range(start, end):
            b = ord(text[i])
            if b >= 0x80 or not self.ascii_plain[b]:
                return False
        return True

    def _span(self, text: str, start: int, end: int, ids: List[int]) -> None:
        if self._plain(text, start, end):
            self._words(text[start:end], start == 0, ids)
            return
        chars, cps = self._chars(text, start, end)
        self._words(self._normalize(chars, cps) if self.precompiled else "".join(chars), start == 0, ids)

    def _words(self, normalized: str, first: bool, ids: List[int]) -> None:
        """Replace, pre-tokenize and segment the normalized text of one span."""
        if self.collapse_spaces:
            normalized = self._collapse(normalized)
        pieces: List[str] = []
        if self.whitespace_split:
            n = len(normalized)
            i = 0
            word = 0
            while i < n:
                cp, nxt = self._next_char(normalized, i, n)
                if cp in self.split_whitespace:
                    self._pieces(normalized[word:i], False, pieces)
                    word = nxt
                i = nxt
            self._pieces(normalized[word:n], False, pieces)
        else:
            self._pieces(normalized, first, pieces)
        for piece in pieces:
            if len(ids) >= self.budget:
                break
            self._viterbi(piece, ids)


def build_unigram(tables: UnigramTables) -> torch.jit.ScriptModule:
    return torch.jit.script(UnigramTokenizer(tables))
