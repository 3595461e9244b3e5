"""The tables of an in-graph Unigram tokenizer (XLM-R, multilingual-e5, bge-m3, Jina v3 style), derived at export
time from the model's own ``tokenizers.Tokenizer``.

What the graph reproduces: the normalizer ``Precompiled`` (SentencePiece's charsmap: its keys read out of the trie,
each single character checked against the library's own normalizer, grapheme classes from ``charsmap``) optionally
followed by ``Replace(" {2,}" -> " ")``; the pre-tokenizer ``Metaspace`` (any prepend scheme, split or not), alone or
after ``WhitespaceSplit``; the Unigram model's Viterbi search with the library's scores as ``to_str()`` writes them
(the JSON file's rounded scores change results), its unknown-token penalty and unknown-piece fusing, and byte
fallback. Anything else is refused by name.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from functools import lru_cache

from .tables import AddedTables, _unsupported, _whitespace, added_tables, byte_fallback_ids, steps_of

NEVER, ALWAYS, FIRST = 0, 1, 2
_SCHEMES = {"never": NEVER, "always": ALWAYS, "first": FIRST}
K_UNK_PENALTY = 10.0  # the library's (and SentencePiece's) score below the lowest piece for an unknown character
_SURROGATES = range(0xD800, 0xE000)


@dataclass(kw_only=True)
class UnigramTables(AddedTables):
    single: dict[int, str] = field(default_factory=dict)  # charsmap keys of one character -> normalized
    multi: dict[str, str] = field(default_factory=dict)  # keys of several characters (under 6 bytes)
    classes: dict[int, int] = field(default_factory=dict)  # grapheme classes (charsmap), when there is a charsmap
    precompiled: bool = False
    collapse_spaces: bool = False  # Replace(" {2,}" -> " ")
    whitespace_split: bool = False
    split_whitespace: dict[int, bool] = field(default_factory=dict)
    replacement: str = "\u2581"
    prepend: int = ALWAYS
    split: bool = True
    vocab: dict[str, int] = field(default_factory=dict)
    scores: list[float] = field(default_factory=list)
    unk_id: int = 0
    unk_score: float = 0.0
    byte_ids: list[int] = field(default_factory=list)  # byte fallback: <0xXX> ids (-1: missing); empty: none


def _is_collapse(step: dict) -> bool:
    return step.get("type") == "Replace" and step.get("pattern") == {"Regex": " {2,}"} and step.get("content") == " "


def unsupported_unigram(data: dict):
    """Why the tokenizer JSON ``data`` (model Unigram) is no Unigram tokenizer the graph reproduces, or None."""
    model = data["model"]
    if model.get("unk_id") is None:
        return _unsupported("model.unk_id", "a Unigram model without an unknown token (the library fails on an "
                                            "unknown character) is not reproduced")
    steps = steps_of(data.get("normalizer"), "normalizer")
    names = [s.get("type") for s in steps]
    if names not in ([], ["Precompiled"], ["Replace"], ["Precompiled", "Replace"]) or (
            "Replace" in names and not _is_collapse(steps[-1])):
        return _unsupported("normalizer", f"the normalizer {names} is not one the graph reproduces (Precompiled, "
                                          "then Replace of ' {2,}' by ' ')")
    if "Precompiled" in names and not steps[0].get("precompiled_charsmap"):
        return _unsupported("normalizer.precompiled_charsmap", "a Precompiled normalizer without a charsmap")
    pre = steps_of(data.get("pre_tokenizer"), "pretokenizer")
    kinds = [p.get("type") for p in pre]
    if kinds not in (["Metaspace"], ["WhitespaceSplit", "Metaspace"]):
        return _unsupported("pre_tokenizer", f"the pre-tokenizer {kinds} is not Metaspace (alone or after "
                                             "WhitespaceSplit)")
    meta = pre[-1]
    if len(meta.get("replacement", "")) != 1 or meta.get("prepend_scheme", "always") not in _SCHEMES:
        return _unsupported("pre_tokenizer.replacement", f"Metaspace {meta} is not one replacement character with "
                                                         "a known prepend_scheme")
    if kinds[0] == "WhitespaceSplit" and meta.get("prepend_scheme") == "first":
        return _unsupported("pre_tokenizer.prepend_scheme", "prepend_scheme 'first' after WhitespaceSplit (it "
                                                            "depends on each word's offset in the original text)")
    for token in data.get("added_tokens", []):
        if token.get("single_word") or token.get("normalized"):
            return _unsupported("added_tokens", f"added token {token['content']!r} has single_word or normalized")
    return None


@lru_cache(maxsize=1)
def _charsmap_tables(charsmap: bytes) -> tuple[dict[int, str], dict[str, str]]:
    """The charsmap's single-character keys, checked against the library's own normalizer on every code point, and
    its keys of several characters that a grapheme (under 6 bytes) can start with (cached for a model's variants
    and one process's exports; shared, not to be modified)."""
    from tokenizers.normalizers import Precompiled

    from .charsmap import parse_charsmap

    single, multi = {}, {}
    for key, value in parse_charsmap(charsmap).items():
        try:
            text = key.decode("utf-8")
        except UnicodeDecodeError:
            raise _unsupported("normalizer.precompiled_charsmap", f"the charsmap key {key!r} is not UTF-8 (it would "
                                                                  "match part of a character)") from None
        if len(text) == 1:
            single[ord(text)] = value
        elif len(key) < 6 and "\0" not in text:  # the library looks no further than a NUL
            multi[text] = value
    norm = Precompiled(charsmap)
    for cp in range(0x110000):
        if cp in _SURROGATES:
            continue
        if norm.normalize_str(chr(cp)) != single.get(cp, chr(cp)):
            raise _unsupported("normalizer.precompiled_charsmap", f"U+{cp:04X} normalizes differently from the "
                                                                  "charsmap's trie as read here")
    return single, multi


def derive_unigram_tables(backend, max_seq_len: int) -> UnigramTables:
    """The tables of ``backend`` (a ``tokenizers.Tokenizer`` with a Unigram model)."""
    data = json.loads(backend.to_str())
    problem = unsupported_unigram(data)
    if problem is not None:
        raise problem
    model = data["model"]
    steps = steps_of(data.get("normalizer"), "normalizer")
    pre = steps_of(data.get("pre_tokenizer"), "pretokenizer")
    meta = pre[-1]
    single, multi, classes = {}, {}, {}
    precompiled = bool(steps) and steps[0]["type"] == "Precompiled"
    if precompiled:
        from .charsmap import grapheme_classes

        single, multi = _charsmap_tables(base64.b64decode(steps[0]["precompiled_charsmap"]))
        classes = grapheme_classes()
    scores = [float(score) for _, score in model["vocab"]]
    vocab = backend.get_vocab(with_added_tokens=False)
    byte_ids = byte_fallback_ids(vocab) if model.get("byte_fallback") else []
    whitespace_split = pre[0]["type"] == "WhitespaceSplit"
    return UnigramTables(
        single=single, multi=multi, classes=classes, precompiled=precompiled,
        collapse_spaces=bool(steps) and _is_collapse(steps[-1]), whitespace_split=whitespace_split,
        split_whitespace=_whitespace() if whitespace_split else {}, replacement=meta["replacement"],
        prepend=_SCHEMES[meta.get("prepend_scheme", "always")], split=bool(meta.get("split", True)),
        vocab=vocab, scores=scores, unk_id=int(model["unk_id"]), unk_score=min(scores) - K_UNK_PENALTY,
        byte_ids=byte_ids, **added_tables(backend, max_seq_len))
