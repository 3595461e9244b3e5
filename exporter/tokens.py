"""Client-side tokenization for a served token model: truncation as the model says, padding to a length bucket.

Triton's dynamic batcher merges only requests whose variable dims are equal, so requests padded to a small set
of lengths can be merged while each one stays close to its real length.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

DEFAULT_BUCKETS = (16, 32, 64, 128, 256, 512)


def load_tokenizer(version_dir: Path, tokenizer_dir: str = "tokenizer"):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(Path(version_dir) / tokenizer_dir))


def bucket_length(longest: int, max_seq_len: int, buckets: tuple[int, ...] = DEFAULT_BUCKETS) -> int:
    """The smallest bucket that holds ``longest`` tokens; ``max_seq_len`` when none does."""
    for size in buckets:
        if longest <= size <= max_seq_len:
            return size
    return max(longest, min(max_seq_len, max(buckets)))


def encode_batch(tokenizer, texts: list[str], max_seq_len: int, input_names: tuple[str, ...] | list[str],
                 dtype=np.int64, buckets: tuple[int, ...] | None = None) -> dict[str, np.ndarray]:
    """Token arrays [len(texts), L] for ``input_names``: L is the longest text, or its bucket when given."""
    enc = tokenizer(list(texts), truncation=True, max_length=max_seq_len, padding=False)
    longest = max(len(ids) for ids in enc["input_ids"])
    length = bucket_length(longest, max_seq_len, buckets) if buckets else longest
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    left = getattr(tokenizer, "padding_side", "right") == "left"
    arrays = {}
    for name in input_names:
        fill = pad_id if name == "input_ids" else 0
        out = np.full((len(texts), length), fill, dtype=dtype)
        for row, ids in enumerate(enc["input_ids"]):
            values = enc[name][row] if name in enc else [0] * len(ids)
            if name == "attention_mask":
                values = [1] * len(ids)
            if left:
                out[row, length - len(ids):] = values
            else:
                out[row, : len(ids)] = values
        arrays[name] = out
    return arrays
