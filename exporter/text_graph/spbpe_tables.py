"""The tables of an in-graph SentencePiece-style BPE tokenizer (Gemma, EmbeddingGemma, Llama 2 style: characters as
the initial symbols, byte fallback to ``<0xXX>`` tokens, spaces written as U+2581), derived at export time from the
model's own ``tokenizers.Tokenizer``.

What the graph reproduces: the normalizer ``Replace(" " -> one character)`` optionally with ``Prepend`` (in the
JSON's order), no pre-tokenizer or transformers' ``Split(" ", ...)`` after that Replace (no space is left for it to
split on, so the whole stretch is one word), and the BPE model as the library's ``merge_word`` runs it: each character
its vocabulary id, else its UTF-8 bytes' ``<0xXX>`` ids (all of them or none), else the unknown token (neighbours
fused with ``fuse_unk``; a pending unknown is written when the next known character comes, after any byte tokens in
between), then merges by rank, lowest first and leftmost among equals, on ids; ``ignore_merges`` looks the whole word
up first. Anything else (dropout, subword affixes, other normalizers or pre-tokenizers) is refused by name.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from .tables import AddedTables, _unsupported, added_tables, byte_fallback_ids, steps_of


@dataclass(kw_only=True)
class SentencePieceBPETables(AddedTables):
    vocab: dict[str, int]
    merges: dict[int, int]  # left id * width + right id -> rank * width + merged id (the lowest value: the next merge)
    width: int  # one more than the largest id
    byte_ids: list[int] = field(default_factory=list)  # byte fallback: <0xXX> ids (-1: missing); empty: none
    unk_id: int = -1  # -1: a character with no id (and no byte tokens) is dropped, as the library drops it
    fuse_unk: bool = False
    ignore_merges: bool = False
    space: str = " "  # what a space becomes (Replace's content)
    replace_space: bool = False
    prepend: list[str] = field(default_factory=list)  # Prepend's characters, written before every non-empty stretch
    chunked: bool = False  # the space has an id of its own: words can be merged one by one
    # Characters that some merge joins to a space after them (a left piece ending in one, a right one starting with
    # the space; ">" stands for byte and unknown tokens): a word boundary after one of them is not cut.
    joins_space: dict[str, bool] = field(default_factory=dict)


def _is_space_replace(step: dict) -> bool:
    return (step.get("type") == "Replace" and step.get("pattern") == {"String": " "}
            and len(step.get("content", "")) == 1 and step["content"] != " ")


def unsupported_spbpe(data: dict):
    """Why the tokenizer JSON ``data`` (model BPE, no ByteLevel pre-tokenizer) is no SentencePiece-style BPE the graph
    reproduces, or None."""
    model = data["model"]
    if model.get("dropout") not in (None, 0, 0.0):
        return _unsupported("model.dropout", f"BPE dropout {model['dropout']} samples its merges; only null is "
                                             "reproduced")
    for key in ("continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(key):
            return _unsupported(f"model.{key}", f"BPE with {key} {model[key]!r} is not reproduced")
    steps = steps_of(data.get("normalizer"), "normalizer")
    names = [s.get("type") for s in steps]
    if (sorted(names) not in ([], ["Replace"], ["Prepend"], ["Prepend", "Replace"])
            or any(s["type"] == "Replace" and not _is_space_replace(s) for s in steps)
            or any(s["type"] == "Prepend" and not s.get("prepend") for s in steps)):
        return _unsupported("normalizer", f"the normalizer {names} is not one the graph reproduces for "
                                          "SentencePiece-style BPE (Replace of ' ' by one character, Prepend)")
    replaces = any(s["type"] == "Replace" for s in steps)
    pre = steps_of(data.get("pre_tokenizer"), "pretokenizer")
    if pre and " " in "".join(_normalizer_parts(steps)[2]):
        return _unsupported("normalizer", "a Prepend that leaves a space for the Split pre-tokenizer is not "
                                          "reproduced")
    if pre and not (replaces and all(p.get("type") == "Split" and p.get("pattern") == {"String": " "}
                                     and not p.get("invert") for p in pre)):
        return _unsupported("pre_tokenizer", f"the pre-tokenizer {[p.get('type') for p in pre]} is not none or "
                                             "Split(' ') after a normalizer that replaces every space")
    unk = model.get("unk_token")
    if unk is not None and unk not in model["vocab"]:
        return _unsupported("model.unk_token", f"the unknown token {unk!r} is not in the vocabulary (the library "
                                               "fails on a character it cannot write)")
    for token in data.get("added_tokens", []):
        if token.get("single_word") or token.get("normalized"):
            return _unsupported("added_tokens", f"added token {token['content']!r} has single_word or normalized")
    return None


def _normalizer_parts(steps: list[dict]) -> tuple[str, bool, list[str]]:
    """(space, replace_space, prepend characters): a Prepend before the Replace has its spaces replaced too."""
    space, replace, prepend = " ", False, ""
    for step in steps:
        if step["type"] == "Replace":
            space, replace = step["content"], True
            prepend = prepend.replace(" ", space)
        else:
            prepend = step["prepend"] + prepend
    return space, replace, list(prepend)


def derive_spbpe_tables(backend, max_seq_len: int) -> SentencePieceBPETables:
    """The tables of ``backend`` (a ``tokenizers.Tokenizer`` with a SentencePiece-style BPE model)."""
    data = json.loads(backend.to_str())
    problem = unsupported_spbpe(data)
    if problem is not None:
        raise problem
    model = data["model"]
    vocab = backend.get_vocab(with_added_tokens=False)
    width = max(vocab.values()) + 1
    merges: dict[int, int] = {}
    joins_space: dict[str, bool] = {}
    space, replace_space, prepend = _normalizer_parts(steps_of(data.get("normalizer"), "normalizer"))
    for rank, merge in enumerate(model["merges"]):
        left, right = merge if isinstance(merge, list) else merge.split(" ", 1)
        # A later duplicate replaces an earlier one, as the library's merge map is built.
        merges[vocab[left] * width + vocab[right]] = rank * width + vocab[left + right]
        if right.startswith(space) and not left.endswith(space):
            joins_space[left[-1]] = True
    unk = model.get("unk_token")
    return SentencePieceBPETables(
        vocab=vocab, merges=merges, width=width,
        byte_ids=byte_fallback_ids(vocab) if model.get("byte_fallback") else [],
        unk_id=vocab[unk] if unk is not None else -1, fuse_unk=bool(model.get("fuse_unk")),
        ignore_merges=bool(model.get("ignore_merges")), space=space, replace_space=replace_space, prepend=prepend,
        chunked=space in vocab, joins_space=joins_space, **added_tables(backend, max_seq_len))
