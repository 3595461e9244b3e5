"""Client-side tokenization for a served token model: truncation as the model says, padding to a length bucket.

Triton's dynamic batcher merges only requests whose variable dims are equal, so requests padded to a small set
of lengths can be merged while each one stays close to its real length.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .export.pt2 import ordinal

DEFAULT_BUCKETS = (16, 32, 64, 128, 256, 512)


def load_tokenizer(version_dir: Path, tokenizer_dir: str = "tokenizer"):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(Path(version_dir) / tokenizer_dir))


def request_buckets(variant: str, concurrent: bool) -> tuple[int, ...] | None:
    """The lengths a client pads its one-text requests to: ``DEFAULT_BUCKETS`` when requests run ``concurrent``ly to a
    padded export, whose batcher merges only equal lengths; None (each text as it is) for a lone client, and for a
    ragged export, which merges any lengths and has no attention mask (padding would be read as tokens)."""
    return DEFAULT_BUCKETS if concurrent and variant != "ragged" else None


def bucket_length(longest: int, max_seq_len: int, buckets: tuple[int, ...] = DEFAULT_BUCKETS) -> int:
    """The smallest bucket that holds ``longest`` tokens; ``max_seq_len`` when none does."""
    for size in buckets:
        if longest <= size <= max_seq_len:
            return size
    return max(longest, min(max_seq_len, max(buckets)))


def feature_names(served_names: Sequence[str], model_inputs: Sequence[str]) -> list[str]:
    """The model input (``input_ids``, ``attention_mask``, ...) that each served config input carries: itself when the
    config uses the model's own names (TorchScript exports), the n-th model input for ``INPUT__<n>`` (pt2 exports)."""
    features = []
    for name in served_names:
        n = ordinal(name)
        if name in model_inputs or n is None:
            features.append(name)
        elif n < len(model_inputs):
            features.append(model_inputs[n])
        else:
            raise ValueError(f"config input '{name}' names input {n}, but the model has {len(model_inputs)} inputs "
                             f"({', '.join(model_inputs)})")
    return features


def encode_batch(tokenizer, texts: list[str], max_seq_len: int, input_names: Sequence[str],
                 dtype=np.int64, buckets: tuple[int, ...] | None = None,
                 model_inputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Token arrays [len(texts), L] keyed by ``input_names``: L is the longest text, or its bucket when given.
    ``model_inputs`` (the export's own input order) resolves served names such as ``INPUT__0``."""
    enc = tokenizer(list(texts), truncation=True, max_length=max_seq_len, padding=False)
    longest = max(len(ids) for ids in enc["input_ids"])
    length = bucket_length(longest, max_seq_len, buckets) if buckets else longest
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    left = getattr(tokenizer, "padding_side", "right") == "left"
    arrays = {}
    features = feature_names(input_names, model_inputs) if model_inputs else list(input_names)
    for name, feature in zip(input_names, features):
        fill = pad_id if feature == "input_ids" else 0
        out = np.full((len(texts), length), fill, dtype=dtype)
        for row, ids in enumerate(enc["input_ids"]):
            values = enc[feature][row] if feature in enc else [0] * len(ids)
            if feature == "attention_mask":
                values = [1] * len(ids)
            if left:
                out[row, length - len(ids):] = values
            else:
                out[row, : len(ids)] = values
        arrays[name] = out
    return arrays


@dataclass(frozen=True)
class RequestBuilder:
    """Texts -> the token arrays one request of an exported model carries, from its recorded client contract
    (variant, inputs, max length) and the inputs the server declares. verify, soak and tune all build requests here."""

    tokenizer: object
    max_seq_len: int
    names: tuple[str, ...]  # the served config inputs, in order
    dtype: object  # their numpy dtype
    buckets: tuple[int, ...] | None
    model_inputs: tuple[str, ...]  # the export's own input names (resolve INPUT__<n>)

    def __call__(self, texts: list[str]) -> dict[str, np.ndarray]:
        return encode_batch(self.tokenizer, texts, self.max_seq_len, self.names, self.dtype, self.buckets,
                            model_inputs=self.model_inputs)


@dataclass(frozen=True)
class TextRequestBuilder:
    """Texts -> the one input a text model (``<name>_text``) takes: UTF-8 strings, BYTES ``[len(texts), 1]``. The
    text model tokenizes them itself (verify, soak and tune send its requests through this)."""

    name: str = "text"  # the served config input

    def __call__(self, texts: list) -> dict[str, np.ndarray]:
        return {self.name: np.array([t if isinstance(t, bytes) else t.encode("utf-8") for t in texts],
                                    dtype=np.object_).reshape(-1, 1)}


def request_builder(meta, tokenizer, served, concurrent: bool) -> RequestBuilder:
    """The builder for an export's recorded ``meta`` (tei_export.json) served as ``served`` (its inputs as the server
    reports them), for requests sent ``concurrent``ly or one at a time."""
    return RequestBuilder(tokenizer, meta.max_seq_len, tuple(t.name for t in served.inputs),
                          served.inputs[0].numpy_dtype, request_buckets(meta.variant, concurrent),
                          tuple(meta.input_names))
