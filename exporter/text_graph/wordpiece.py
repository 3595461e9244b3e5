"""A BERT WordPiece tokenizer as a ``torch.jit.script`` module: raw text bytes in, the ``tokenizers`` library's ids
out, with no Python at run time.

Between the added tokens (matched by :class:`scripted.ScriptedTokenizer`), each stretch is normalized and split into
words character by character (``tables``), and each word goes through greedy longest-match-first WordPiece.
Kinds are the integers of ``tables`` (KEEP 0, SPLIT 1, ISOLATE 2, MIXED 3) written as literals: scripted code
cannot read module globals.
"""
# No ``from __future__ import annotations``: TorchScript reads the class annotations below as types.
from typing import Dict, List

import torch

from .scripted import ScriptedTokenizer
from .tables import KEEP, WordPieceTables


class WordPieceTokenizer(ScriptedTokenizer):
    ascii_kind: List[int]
    ascii_text: List[str]
    ascii_plain: List[bool]
    kind: Dict[int, int]
    text: Dict[int, str]
    mixed_chars: Dict[int, List[str]]
    mixed_kinds: Dict[int, List[int]]
    vocab: Dict[str, int]

    def __init__(self, tables: WordPieceTables):
        super().__init__(tables)
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

def build_tokenizer(tables: WordPieceTables) -> torch.jit.ScriptModule:
    return torch.jit.script(WordPieceTokenizer(tables))
