"""What every in-graph tokenizer does around its model, as the ``tokenizers`` library does it: decode the raw bytes
(Python's ``bytes.decode("utf-8", "replace")`` rule, by hand: TorchScript strings are UTF-8 byte strings whose
``len``, indexing and slicing count bytes), match the added tokens in the raw text (leftmost, then longest;
lstrip/rstrip take the whitespace beside them), truncate to the tokens that fit and put the post-processor's ids
around them. A subclass tokenizes the stretches between added tokens (``_span``).

Nothing here raises on any input: an exception in ``forward()`` would fail every request Triton merged.
"""
# No ``from __future__ import annotations``: TorchScript reads the class annotations below as types.
from typing import Dict, List, Tuple

import torch

from .tables import AddedTables


class ScriptedTokenizer(torch.nn.Module):
    added: List[str]
    added_ids: List[int]
    added_lstrip: List[bool]
    added_rstrip: List[bool]
    added_first: List[bool]
    whitespace: Dict[int, bool]
    prefix_ids: List[int]
    suffix_ids: List[int]

    def __init_subclass__(cls, **kwargs):
        # TorchScript types a module's attributes from its own class's annotations only: hand these down.
        super().__init_subclass__(**kwargs)
        cls.__annotations__ = {**ScriptedTokenizer.__annotations__, **cls.__dict__.get("__annotations__", {})}

    def __init__(self, tables: AddedTables):
        super().__init__()
        self.added = list(tables.added)
        self.added_ids = list(tables.added_ids)
        self.added_lstrip = list(tables.added_lstrip)
        self.added_rstrip = list(tables.added_rstrip)
        first = {t.encode("utf-8")[0] for t in tables.added if t}
        self.added_first = [b in first for b in range(256)]
        self.whitespace = dict(tables.whitespace)
        self.prefix_ids = list(tables.prefix_ids)
        self.suffix_ids = list(tables.suffix_ids)
        self.budget = tables.budget
        self.ill_formed = "\ufffd"  # what an ill-formed byte sequence reads as

    def _span(self, text: str, start: int, end: int, ids: List[int]) -> None:
        """Tokenize the bytes ``text[start:end]`` (no added token inside) onto ``ids``; a subclass's model."""
        pass

    def _next_char(self, text: str, i: int, end: int) -> Tuple[int, int]:
        """(code point, next byte index) of the character at byte ``i``; U+FFFD for an ill-formed subsequence,
        which ends before the first byte that cannot continue it (Python's "replace" rule)."""
        b = ord(text[i])
        if b < 0x80:
            return b, i + 1
        need = 0
        lo = 0x80
        hi = 0xBF
        cp = 0
        if 0xC2 <= b <= 0xDF:
            need = 1
            cp = b & 0x1F
        elif 0xE0 <= b <= 0xEF:
            need = 2
            cp = b & 0x0F
            if b == 0xE0:
                lo = 0xA0
            elif b == 0xED:
                hi = 0x9F
        elif 0xF0 <= b <= 0xF4:
            need = 3
            cp = b & 0x07
            if b == 0xF0:
                lo = 0x90
            elif b == 0xF4:
                hi = 0x8F
        else:
            return 0xFFFD, i + 1
        j = i + 1
        for k in range(need):
            if j >= end:
                return 0xFFFD, j
            c = ord(text[j])
            if (k == 0 and (c < lo or c > hi)) or (k > 0 and (c < 0x80 or c > 0xBF)):
                return 0xFFFD, j
            cp = (cp << 6) | (c & 0x3F)
            j += 1
        return cp, j

    def _chars(self, text: str, start: int, end: int) -> Tuple[List[str], List[int]]:
        """The characters of the bytes ``text[start:end]`` as UTF-8 strings, each ill-formed sequence as U+FFFD, and
        their code points."""
        chars: List[str] = []
        cps: List[int] = []
        i = start
        while i < end:
            b = ord(text[i])
            if b < 0x80:
                chars.append(text[i])
                cps.append(b)
                i += 1
                continue
            cp, nxt = self._next_char(text, i, end)
            if cp == 0xFFFD and text[i:nxt] != self.ill_formed:
                chars.append(self.ill_formed)
            else:
                chars.append(text[i:nxt])
            cps.append(cp)
            i = nxt
        return chars, cps

    def _match(self, text: str, start: int) -> List[int]:
        """The next added token in ``text`` from byte ``start``: [begin, end, index], leftmost then longest;
        [-1, -1, -1] when none."""
        n = len(text)
        for i in range(start, n):
            if self.added_first[ord(text[i])]:
                best = -1
                size = 0
                for k in range(len(self.added)):
                    token = self.added[k]
                    if len(token) > size and i + len(token) <= n and text[i:i + len(token)] == token:
                        best = k
                        size = len(token)
                if best >= 0:
                    return [i, i + size, best]
        return [-1, -1, -1]

    def _strip_left(self, text: str, floor: int, begin: int) -> int:
        """The start of the whitespace run that ends at ``begin`` (not before ``floor``)."""
        starts: List[int] = []
        spaces: List[bool] = []
        i = floor
        while i < begin:
            cp, nxt = self._next_char(text, i, begin)
            starts.append(i)
            spaces.append(cp in self.whitespace)
            i = nxt
        m = len(starts)
        while m > 0 and spaces[m - 1]:
            m -= 1
        return starts[m] if m < len(starts) else begin

    def _strip_right(self, text: str, end: int) -> int:
        n = len(text)
        while end < n:
            cp, nxt = self._next_char(text, end, n)
            if cp not in self.whitespace:
                break
            end = nxt
        return end

    @torch.jit.export
    def encode(self, text: str) -> List[int]:
        """The ids the library gives ``text`` (truncated, with the special tokens around it)."""
        ids: List[int] = []
        pos = 0
        n = len(text)
        while pos < n and len(ids) < self.budget:
            found = self._match(text, pos) if len(self.added) > 0 else [-1, -1, -1]
            if found[0] < 0:
                self._span(text, pos, n, ids)
                break
            begin = found[0]
            stop = found[1]
            k = found[2]
            if self.added_lstrip[k]:
                begin = self._strip_left(text, pos, begin)
            if self.added_rstrip[k]:
                stop = self._strip_right(text, stop)
            if begin > pos:
                self._span(text, pos, begin, ids)
            if len(ids) < self.budget:
                ids.append(self.added_ids[k])
            pos = stop
        return self.prefix_ids + ids[:self.budget] + self.suffix_ids

    def forward(self, texts: List[str]) -> List[List[int]]:
        return [self.encode(t) for t in texts]


