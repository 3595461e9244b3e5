"""Which architectures can be exported, and every per-architecture fact the export needs: one entry per family.

In the style of optimum's exporter configs: one registered entry per ``config.model_type``, holding what the
exported forward() takes, which config keys give the hidden size and the positions, whether attention is causal,
which attention implementation traces, what ragged and pt2 exports support, and a tiny test configuration. The
test suite exports every registered entry from its tiny configuration (tests/test_architectures.py fails for an
entry without one), so adding a family is one entry here plus what its tests show.

Light: no torch or transformers import, so the CLI lists the families without loading them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import UnsupportedModelError

IDS_MASK = ("input_ids", "attention_mask")
IDS_MASK_TYPES = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class Architecture:
    model_type: str
    input_names: tuple[str, ...]  # forward() arguments of the export, in order (the backend matches them by name)
    # RoBERTa-style models number positions from padding_idx + 1, so fewer positions are usable.
    position_offset: int = 0
    hidden_keys: tuple[str, ...] = ("hidden_size", "dim", "d_model")
    positions_keys: tuple[str, ...] = ("max_position_embeddings", "n_positions")
    # A decoder: each token sees only earlier ones, so the text is read from its last real token ("lasttoken"),
    # and whichever side the tokenizer pads, the pooled row must be that token.
    causal: bool = False
    # attn_implementation for the reference and the export when the library's default does not trace (None: the
    # default, sdpa where the family has it, traced with an explicit mask; deberta-v2 has only eager attention).
    attention: str | None = None
    # Masks the family's own code builds in a way tracing cannot record, built by the export instead
    # (attention_masks.py): "" or "bidirectional_window".
    attention_masks: str = ""
    ragged: bool = True  # the scripted ragged module around the traced encoder gives the reference's rows
    pt2: bool = True  # torch.export + AOTInductor handles the family
    pt2_why_not: str = ""
    # model_type spellings of remote-code checkpoints whose weights this native class loads (Alibaba GTE: "new")
    aliases: tuple[str, ...] = ()
    # remote-code classes (the class name of config.json's auto_map AutoModel) whose checkpoints this native class
    # loads whatever model_type they say (jina-embeddings-v3 says "xlm-roberta" and names XLMRobertaLoRA)
    remote_classes: tuple[str, ...] = ()
    examples: tuple[str, ...] = ()  # hub ids, for the README and error messages
    tokenizer_kind: str = "wordpiece"  # the tokenizer family its checkpoints ship: wordpiece, bpe, unigram, sp-bpe
    # A tiny configuration for the tests: AutoConfig.for_model(model_type, **tiny) (vocabulary and padding id are
    # the test tokenizer's).
    tiny: dict = field(default_factory=dict)

    @property
    def uses_token_type_ids(self) -> bool:
        return "token_type_ids" in self.input_names


_BERT_TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
_DECODER_TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                     intermediate_size=64)

_REGISTRY: dict[str, Architecture] = {}


def register(arch: Architecture) -> Architecture:
    for key in (arch.model_type, *arch.aliases):
        _REGISTRY[key] = arch
    return arch


register(Architecture("bert", IDS_MASK_TYPES, examples=("BAAI/bge-small-en-v1.5", "intfloat/e5-base-v2"),
                      tiny=_BERT_TINY))
# RoBERTa has a token_type_ids input with a single type: it carries no information, so it is left out.
register(Architecture("roberta", IDS_MASK, position_offset=2, tokenizer_kind="bpe",
                      examples=("sentence-transformers/all-distilroberta-v1",),
                      tiny={**_BERT_TINY, "type_vocab_size": 1}))
register(Architecture("xlm-roberta", IDS_MASK, position_offset=2, tokenizer_kind="unigram",
                      examples=("intfloat/multilingual-e5-base", "BAAI/bge-m3"),
                      tiny={**_BERT_TINY, "type_vocab_size": 1}))
register(Architecture("camembert", IDS_MASK, position_offset=2, tokenizer_kind="unigram",
                      examples=("dangvantuan/sentence-camembert-base",), tiny={**_BERT_TINY, "type_vocab_size": 1}))
register(Architecture("mpnet", IDS_MASK, position_offset=2, examples=("sentence-transformers/all-mpnet-base-v2",),
                      tiny=_BERT_TINY))
register(Architecture("distilbert", IDS_MASK, examples=("sentence-transformers/msmarco-distilbert-base-v4",),
                      tiny=dict(dim=32, n_layers=2, n_heads=2, hidden_dim=64)))
register(Architecture("electra", IDS_MASK_TYPES, examples=("google/electra-small-discriminator",), tiny=_BERT_TINY))
register(Architecture("modernbert", IDS_MASK, tokenizer_kind="bpe",
                      examples=("Alibaba-NLP/gte-modernbert-base", "nomic-ai/modernbert-embed-base"),
                      # global attention every 2nd layer and a local window of 8 tokens: the tests' lengths cross it
                      tiny={**_BERT_TINY, "global_attn_every_n_layers": 2, "local_attention": 8}))
register(Architecture("qwen3", IDS_MASK, causal=True, tokenizer_kind="bpe",
                      examples=("Qwen/Qwen3-Embedding-0.6B", "Qwen/Qwen3-Embedding-4B"), tiny=_DECODER_TINY))
register(Architecture("gemma3_text", IDS_MASK, tokenizer_kind="sp-bpe", examples=("google/embeddinggemma-300m",),
                      attention_masks="bidirectional_window",
                      tiny={**_DECODER_TINY, "use_bidirectional_attention": True, "sliding_window": 8,
                            "layer_types": ["sliding_attention", "full_attention"]}))
# EmbeddingGemma 2: a bidirectional Gemma whose model ends in its own projection to embedding_dim (the width the
# pooling sees). Its config is per-layer: full-attention layers take their head size and key/value heads from the
# builder-only arguments global_head_dim and num_global_key_value_heads (defaults 512 and 1), not from head_dim and
# num_key_value_heads, so a tiny configuration names them too.
register(Architecture("embedding_gemma2_text", IDS_MASK, tokenizer_kind="sp-bpe", examples=("google/embeddinggemma-2",),
                      hidden_keys=("embedding_dim", "hidden_size"),
                      tiny={**_DECODER_TINY, "global_head_dim": 16, "num_global_key_value_heads": 1,
                            "hidden_size_per_layer_input": 16, "embedding_dim": 24, "sliding_window": 8,
                            "layer_types": ["sliding_attention", "full_attention"]}))
register(Architecture("gte", IDS_MASK_TYPES, aliases=("new",),
                      examples=("Alibaba-NLP/gte-base-en-v1.5", "Alibaba-NLP/gte-multilingual-base",
                                "Snowflake/snowflake-arctic-embed-m-v2.0"), tiny=_BERT_TINY))
register(Architecture("nomic_bert", IDS_MASK_TYPES, examples=("nomic-ai/nomic-embed-text-v1.5",), tiny=_BERT_TINY))
register(Architecture("eurobert", IDS_MASK, tokenizer_kind="bpe", examples=("EuroBERT/EuroBERT-210m",),
                      tiny={**_DECODER_TINY}))
register(Architecture("jina_embeddings_v3", IDS_MASK, tokenizer_kind="unigram", remote_classes=("XLMRobertaLoRA",),
                      examples=("jinaai/jina-embeddings-v3",), tiny={**_BERT_TINY, "type_vocab_size": 1}))
register(Architecture("deberta-v2", IDS_MASK_TYPES, attention="eager", tokenizer_kind="unigram",
                      examples=("MoritzLaurer/deberta-v3-base-zeroshot-v2.0",), tiny={**_BERT_TINY,
                                                                                     "type_vocab_size": 0}))


def supported_model_types() -> list[str]:
    return sorted({a.model_type for a in _REGISTRY.values()})


def registered() -> list[Architecture]:
    """Every registered family once (aliases folded)."""
    return sorted({a.model_type: a for a in _REGISTRY.values()}.values(), key=lambda a: a.model_type)


def architecture_for(model_type: str, where: str | None = None) -> Architecture:
    try:
        return _REGISTRY[model_type]
    except KeyError:
        raise UnsupportedModelError(
            f"architecture '{model_type}' is not supported for TorchScript export",
            fix=f"use a model whose config.json model_type is one of: {', '.join(supported_model_types())}",
            where=where,
        ) from None


def architecture_of(config: dict, where: str | None = None) -> Architecture:
    """The family of a checkpoint's config.json: by the remote-code class its auto_map names, when a native class
    loads that class's checkpoints, else by its model_type."""
    remote = (config.get("auto_map") or {}).get("AutoModel") or ""
    remote = str(remote[0] if isinstance(remote, (list, tuple)) and remote else remote).rsplit(".", 1)[-1]
    if remote:
        found = next((a for a in registered() if remote in a.remote_classes), None)
        if found is not None:
            return found
    return architecture_for(str(config.get("model_type", "")), where)


def config_value(config: dict, keys: tuple[str, ...], default: int = 0) -> int:
    """The first of ``keys`` that ``config`` sets (families name the same fact differently)."""
    return int(next((config[k] for k in keys if config.get(k)), default))
