"""The tokenizer families the graph reproduces, by the model type in the tokenizer's JSON: WordPiece (BERT, MPNet,
MiniLM, GTE, ...), byte-level BPE (RoBERTa, ModernBERT style), Unigram (XLM-R, multilingual-e5, bge-m3 style) and
SentencePiece-style BPE (Gemma, EmbeddingGemma: BPE without the ByteLevel pre-tokenizer). One place to ask whether a
tokenizer is supported, to derive its tables and to script them."""
from __future__ import annotations

import json

import torch

from .bytelevel_tables import ByteLevelTables, derive_bytelevel_tables, unsupported_bytelevel
from .spbpe_tables import SentencePieceBPETables, derive_spbpe_tables, unsupported_spbpe
from .tables import AddedTables, _unsupported, derive_tables, unsupported_part
from .unigram_tables import UnigramTables, derive_unigram_tables, unsupported_unigram

FAMILIES = {"WordPiece": "wordpiece", "BPE": "bytelevel_bpe", "Unigram": "unigram"}


def _is_bytelevel(data: dict) -> bool:
    """BPE is byte-level when its pre-tokenizer is ByteLevel (alone or in a sequence); else SentencePiece-style."""
    pre = data.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    return any(step.get("type") == "ByteLevel" for step in steps)


def _family(data: dict) -> str | None:
    kind = (data.get("model") or {}).get("type")
    if kind == "BPE" and not _is_bytelevel(data):
        return "sentencepiece_bpe"
    return FAMILIES.get(kind)


def family_of(backend) -> str | None:
    return _family(json.loads(backend.to_str()))


def unsupported(backend):
    """Why ``backend`` (a ``tokenizers.Tokenizer``) has no exact graph tokenizer, naming the part; None if it has."""
    data = json.loads(backend.to_str())
    kind = (data.get("model") or {}).get("type")
    if kind == "WordPiece":
        return unsupported_part(backend)
    if _family(data) == "sentencepiece_bpe":
        return unsupported_spbpe(data)
    if kind == "BPE":
        return unsupported_bytelevel(data)
    if kind == "Unigram":
        return unsupported_unigram(data)
    return _unsupported("model.type", f"the tokenizer model is {kind}; the graph has WordPiece, byte-level BPE, "
                                      "Unigram and SentencePiece-style BPE")


_DERIVE = {"wordpiece": derive_tables, "bytelevel_bpe": derive_bytelevel_tables, "unigram": derive_unigram_tables,
           "sentencepiece_bpe": derive_spbpe_tables}


def derive(backend, max_seq_len: int) -> AddedTables:
    """The family's tables; each family's derive refuses what it cannot reproduce, naming the part. (The tokenizer's
    JSON is parsed once here to find the family, not once per question: Gemma's is tens of megabytes.)"""
    derive_family = _DERIVE.get(family_of(backend))
    if derive_family is None:
        raise unsupported(backend)
    return derive_family(backend, max_seq_len)


def build(tables: AddedTables) -> torch.jit.ScriptModule:
    if isinstance(tables, ByteLevelTables):
        from .bytelevel import build_bytelevel

        return build_bytelevel(tables)
    if isinstance(tables, SentencePieceBPETables):
        from .spbpe import build_spbpe

        return build_spbpe(tables)
    if isinstance(tables, UnigramTables):
        from .unigram import build_unigram

        return build_unigram(tables)
    from .wordpiece import build_tokenizer

    return build_tokenizer(tables)
