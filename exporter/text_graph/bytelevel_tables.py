"""The tables of an in-graph byte-level BPE tokenizer (RoBERTa, ModernBERT style), derived at export time from the
model's own ``tokenizers.Tokenizer``.

The ByteLevel pre-tokenizer splits with GPT-2's pattern (contractions, `` ?\\p{L}+``, `` ?\\p{N}+``,
`` ?[^\\s\\p{L}\\p{N}]+``, ``\\s+(?!\\S)``, ``\\s+``), so what the graph needs per code point is its class: letter,
number, other or space. Each class comes from the library's own pre-tokenizer (is the character glued to a letter, a
digit, a ``!`` before it?), which also pins the Unicode version; the byte-to-character map comes from the same
pre-tokenizer on characters of every UTF-8 length; vocabulary and merge ranks from the model. Anything else (a
normalizer, another pre-tokenizer, dropout, subword affixes, byte fallback) is refused by name; BPE without the
ByteLevel pre-tokenizer is SentencePiece-style (``spbpe_tables``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache

from .tables import AddedTables, _unsupported, added_tables

LETTER, NUMBER, OTHER, SPACE = 0, 1, 2, 3
_PROBES = ((LETTER, "a"), (NUMBER, "1"), (OTHER, "!"))
_CHUNK = 20000


@dataclass(kw_only=True)
class ByteLevelTables(AddedTables):
    ascii_class: list[int]  # 128 entries
    char_class: dict[int, int]  # non-ASCII code points that are not OTHER
    byte_map: list[str]  # the character each byte becomes ("" for bytes UTF-8 never holds)
    vocab: dict[str, int]
    merges: dict[str, int]  # "left right" -> rank
    add_prefix_space: bool
    ignore_merges: bool
    unk_id: int  # -1: characters outside the vocabulary are dropped, as the library drops them


def unsupported_bytelevel(data: dict):
    """Why the tokenizer JSON ``data`` (model BPE) is no byte-level BPE the graph reproduces, or None."""
    model = data["model"]
    if model.get("byte_fallback"):
        return _unsupported("model.byte_fallback", "byte fallback beside the ByteLevel pre-tokenizer is not "
                                                   "reproduced (SentencePiece-style BPE, without ByteLevel, is)")
    if data.get("normalizer") is not None:
        return _unsupported("normalizer", f"a {data['normalizer'].get('type')} normalizer before byte-level BPE "
                                          "is not reproduced (NFC and others depend on neighbouring characters)")
    pre = data.get("pre_tokenizer") or {}
    if pre.get("type") != "ByteLevel" or not pre.get("use_regex", True):
        return _unsupported("pre_tokenizer", f"the pre-tokenizer {pre.get('type')} is not ByteLevel with its "
                                             "regex (the graph reproduces GPT-2's split pattern only)")
    for key in ("dropout", "continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(key):
            return _unsupported(f"model.{key}", f"BPE with {key} {model[key]!r} is not reproduced")
    for token in data.get("added_tokens", []):
        if token.get("single_word") or token.get("normalized"):
            return _unsupported("added_tokens", f"added token {token['content']!r} has single_word or normalized")
    return None


def _code_points() -> list[int]:
    return [c for c in range(0x110000) if not 0xD800 <= c < 0xE000]


def _classes(pre) -> tuple[list[int], dict[int, int]]:
    """Each code point's class: glued to the probe character before it (``a``, ``1``, ``!``) in the library's own
    split, else a space. Probes are batched: `` <probe><char>`` repeated, split once per chunk."""
    classes = {}
    cps = _code_points()
    for klass, probe in _PROBES:
        todo = [c for c in cps if c not in classes]
        for i in range(0, len(todo), _CHUNK):
            chunk = todo[i:i + _CHUNK]
            text = "".join(" " + probe + chr(c) for c in chunk)
            starts = {begin for _, (begin, _end) in pre.pre_tokenize_str(text)}
            for k, c in enumerate(chunk):
                if 3 * k + 2 not in starts:  # the character (after its probe) starts no piece: glued to the probe
                    classes[c] = klass
    ascii_class = [classes.get(c, SPACE) for c in range(128)]
    return ascii_class, {c: k for c, k in classes.items() if c >= 128 and k != OTHER} | {
        c: SPACE for c in cps if c >= 128 and c not in classes}


def _byte_map(pre) -> list[str]:
    """The character the library writes for each byte, read from characters of every UTF-8 length."""
    mapping = [""] * 256
    samples = list(range(0x80)) + list(range(0x80, 0x800, 1)) + list(range(0x800, 0x10000, 64)) + [
        0x1000 * k + j for k in range(1, 16) for j in range(0, 64)] + [0x10000 * k + j for k in range(1, 17)
                                                                      for j in range(0, 64)]
    for cp in samples:
        if 0xD800 <= cp < 0xE000:
            continue
        char = chr(cp)
        (piece, _), = pre.pre_tokenize_str(char)
        for byte, mapped in zip(char.encode("utf-8"), piece):
            mapping[byte] = mapped
    return mapping


@lru_cache(maxsize=1)
def _alphabet_tables() -> tuple[list[int], dict[int, int], list[str]]:
    """(ascii_class, char_class, byte_map): the same for every byte-level BPE tokenizer of this library version, so
    derived once per process (shared, not to be modified)."""
    from tokenizers import pre_tokenizers

    splitter = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    return (*_classes(splitter), _byte_map(splitter))


def derive_bytelevel_tables(backend, max_seq_len: int) -> ByteLevelTables:
    """The tables of ``backend`` (a ``tokenizers.Tokenizer`` with a byte-level BPE model)."""
    data = json.loads(backend.to_str())
    problem = unsupported_bytelevel(data)
    if problem is not None:
        raise problem
    model, pre = data["model"], data["pre_tokenizer"]
    ascii_class, char_class, byte_map = _alphabet_tables()
    merges = {}
    for rank, merge in enumerate(model["merges"]):
        left, right = merge if isinstance(merge, list) else merge.split(" ", 1)
        merges.setdefault(left + " " + right, rank)
    vocab = backend.get_vocab(with_added_tokens=False)
    unk = model.get("unk_token")
    return ByteLevelTables(
        ascii_class=ascii_class, char_class=char_class, byte_map=byte_map, vocab=vocab, merges=merges,
        add_prefix_space=bool(pre.get("add_prefix_space")), ignore_merges=bool(model.get("ignore_merges")),
        unk_id=vocab.get(unk, -1) if unk else -1, **added_tables(backend, max_seq_len))
