"""A BERT WordPiece tokenizer as a ``torch.jit.script`` module: raw text bytes in, the ``tokenizers`` library's ids
out, with no Python at run time.

TorchScript strings are UTF-8 byte strings (``len``, indexing and slicing count bytes), so the text is decoded by
hand, with Python's ``bytes.decode("utf-8", "replace")`` rules: each maximal ill-formed subsequence becomes one
U+FFFD, which then goes through the tables like any character. Steps, as the library runs them: added tokens are
matched in the raw text (leftmost, then longest; lstrip/rstrip take the whitespace beside them), each stretch between
them is normalized and split into words character by character (``tables``), each word goes through greedy
longest-match-first WordPiece, the text is cut to the tokens that fit and the post-processor's ids go around it.

Nothing in ``encode`` raises on any input: an exception in ``forward()`` would fail every request Triton merged.
"""
# No ``from __future__ import annotations``: TorchScript reads the class annotations below as types.
from typing import Dict, List, Tuple

import torch

from .tables import KEEP, WordPieceTables


class WordPieceTokenizer(torch.nn.Module):
    ascii_kind: List[int]
    ascii_text: List[str]
    ascii_plain: List[bool]
    kind: Dict[int, int]
    text: Dict[int, str]
    mixed_chars: Dict[int, List[str]]
    mixed_kinds: Dict[int, List[int]]
    vocab: Dict[str, int]
    added: List[str]
    added_ids: List[int]
    added_lstrip: List[bool]
    added_rstrip: List[bool]
    added_first: List[bool]
    whitespace: Dict[int, bool]
    prefix_ids: List[int]
    suffix_ids: List[int]

    def __init__(self, tables: WordPieceTables):
        super().__init__()
        self.ascii_kind = list(tables.ascii_kind)
        self.ascii_text = list(tables.ascii_text)
        # ASCII characters that stay themselves inside a word: a run of them is copied with one slice.
        self.ascii_plain = [k == KEEP and t == chr(c) for c, (k, t) in enumerate(zip(tables.ascii_kind,
                                                                                      tables.ascii_text))]
        self.kind = dict(tables.kind)
        self.text = dict(tables.text)
        self.mixed_chars = {k: list(v) for k, v in tables.mixed_chars.items()}
        self.mixed_kinds = {k: list(v) for k, v in tables.mixed_kinds.items()}
        self.vocab = dict(tables.vocab)
        self.unk_id = tables.unk_id
        self.prefix = tables.prefix
        self.max_chars = tables.max_chars
        # No vocabulary entry is longer than this many bytes: longer candidates need no lookup.
        self.max_piece = max(len(k.encode("utf-8")) for k in tables.vocab)
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

    def _wordpiece(self, word: str, ids: List[int]) -> None:
        """Greedy longest-match-first WordPiece of one word (valid UTF-8) appended to ``ids``."""
        n = len(word)
        if n == 0:
            return
        if n > self.max_chars:  # bytes >= characters: count characters only when it can matter
            chars = 0
            for i in range(n):
                if (ord(word[i]) & 0xC0) != 0x80:
                    chars += 1
            if chars > self.max_chars:
                ids.append(self.unk_id)
                return
        whole = self.vocab.get(word, -1)
        if whole >= 0:
            ids.append(whole)
            return
        pieces: List[int] = []
        start = 0
        while start < n:
            end = min(n, start + self.max_piece)
            while end < n and (ord(word[end]) & 0xC0) == 0x80:
                end -= 1
            found = -1
            while end > start:
                sub = word[start:end]
                if start > 0:
                    sub = self.prefix + sub
                found = self.vocab.get(sub, -1)
                if found >= 0:
                    break
                end -= 1
                while end > start and (ord(word[end]) & 0xC0) == 0x80:
                    end -= 1
            if found < 0:
                ids.append(self.unk_id)
                return
            pieces.append(found)
            start = end
        ids.extend(pieces)

    def _flush(self, parts: List[str], ids: List[int]) -> None:
        if len(parts) > 0:
            self._wordpiece("".join(parts), ids)
            parts.clear()

    def _emit(self, kind: int, out: str, parts: List[str], ids: List[int]) -> None:
        """One normalized character (or run) of kind KEEP / SPLIT / ISOLATE into the word being built."""
        if kind == 0:  # KEEP
            if len(out) > 0:
                parts.append(out)
        elif kind == 1:  # SPLIT
            self._flush(parts, ids)
        else:
            self._flush(parts, ids)
            self._wordpiece(out, ids)

    def _span(self, text: str, start: int, end: int, ids: List[int]) -> None:
        """Normalize, pre-tokenize and WordPiece the bytes ``text[start:end]``; stops once the budget is full."""
        parts: List[str] = []
        i = start
        while i < end and len(ids) < self.budget:
            b = ord(text[i])
            if b < 0x80:
                if self.ascii_plain[b]:
                    j = i + 1
                    while j < end and ord(text[j]) < 0x80 and self.ascii_plain[ord(text[j])]:
                        j += 1
                    parts.append(text[i:j])
                    i = j
                    continue
                cp = b
                nxt = i + 1
                k = self.ascii_kind[b]
                out = self.ascii_text[b]
            else:
                cp, nxt = self._next_char(text, i, end)
                k = self.kind.get(cp, 0)
                out = self.text.get(cp, "")
                if k == 0 and cp not in self.text:
                    out = text[i:nxt]  # the character itself (valid UTF-8: U+FFFD always has a table entry)
            if k == 3:  # MIXED
                chars = self.mixed_chars[cp]
                kinds = self.mixed_kinds[cp]
                for m in range(len(chars)):
                    self._emit(kinds[m], chars[m], parts, ids)
            else:
                self._emit(k, out, parts, ids)
            i = nxt
        self._flush(parts, ids)

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
            self._span(text, pos, begin, ids)
            if len(ids) < self.budget:
                ids.append(self.added_ids[k])
            pos = stop
        return self.prefix_ids + ids[:self.budget] + self.suffix_ids

    def forward(self, texts: List[str]) -> List[List[int]]:
        return [self.encode(t) for t in texts]


def build_tokenizer(tables: WordPieceTables) -> torch.jit.ScriptModule:
    return torch.jit.script(WordPieceTokenizer(tables))
