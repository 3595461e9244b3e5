"""The tokenizer families the graph reproduces, by the model type in the tokenizer's JSON: WordPiece (BERT, MPNet,
MiniLM, GTE, ...) and byte-level BPE (RoBERTa, ModernBERT style). One place to ask whether a tokenizer is supported,
to derive its tables and to script them."""
from __future__ import annotations

import json

import torch

from .bytelevel_tables import ByteLevelTables, derive_bytelevel_tables, unsupported_bytelevel
from .tables import AddedTables, _unsupported, derive_tables, unsupported_part

FAMILIES = {"WordPiece": "wordpiece", "BPE": "bytelevel_bpe"}


def family_of(backend) -> str | None:
    return FAMILIES.get((json.loads(backend.to_str()).get("model") or {}).get("type"))


def unsupported(backend):
    """Why ``backend`` (a ``tokenizers.Tokenizer``) has no exact graph tokenizer, naming the part; None if it has."""
    data = json.loads(backend.to_str())
    kind = (data.get("model") or {}).get("type")
    if kind == "WordPiece":
        return unsupported_part(backend)
    if kind == "BPE":
        return unsupported_bytelevel(data)
    return _unsupported("model.type", f"the tokenizer model is {kind}; the graph has WordPiece and byte-level BPE")


def derive(backend, max_seq_len: int) -> AddedTables:
    problem = unsupported(backend)
    if problem is not None:
        raise problem
    if family_of(backend) == "bytelevel_bpe":
        return derive_bytelevel_tables(backend, max_seq_len)
    return derive_tables(backend, max_seq_len)


def build(tables: AddedTables) -> torch.jit.ScriptModule:
    if isinstance(tables, ByteLevelTables):
        from .bytelevel import build_bytelevel

        return build_bytelevel(tables)
    from .wordpiece import build_tokenizer

    return build_tokenizer(tables)
