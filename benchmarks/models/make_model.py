"""A random-weight model with a real checkpoint's shapes, saved as sentence-transformers saves it (no hub).

    python benchmarks/models/make_model.py modernbert-base OUT_FOLDER
    python benchmarks/models/make_model.py qwen3-0.6b OUT_FOLDER

The shapes are those of answerdotai/ModernBERT-base (as in gte-modernbert-base) and Qwen/Qwen3-0.6B (as in
Qwen3-Embedding-0.6B); the weights are random, so only speed means anything. The tokenizer is one of the family's
kind trained here (tests/family_models.py), and the embedding table has its small vocabulary: a lookup costs the
same whatever the table's size, every other layer has the real shape.
Qwen3's positions are set to 2,048 so that trace's grid (which runs one text at the position limit) stays within
minutes on a CPU; rotary positions do not change the cost of shorter texts.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))

SHAPES = {
    "modernbert-base": ("modernbert", dict(hidden_size=768, num_hidden_layers=22, num_attention_heads=12,
                                           intermediate_size=1152, global_attn_every_n_layers=3,
                                           local_attention=128), 8192, "mean"),
    "qwen3-0.6b": ("qwen3", dict(hidden_size=1024, num_hidden_layers=28, num_attention_heads=16,
                                 num_key_value_heads=8, head_dim=128, intermediate_size=3072), 2048, "lasttoken"),
}


def main(shape: str, out: Path) -> None:
    import dataclasses

    import family_models

    model_type, real, positions, pooling = SHAPES[shape]
    recipe = dataclasses.replace(family_models.RECIPES.get(model_type, family_models.Recipe()), pooling=pooling)
    print(family_models.family_model(out, model_type, recipe=recipe, positions=positions, max_seq_len=512,
                                     shape=real))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
