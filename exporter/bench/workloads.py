"""The texts a bench run measures (short, mixed, long), and the same texts tokenized into batches."""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from ..checks.corpus import build_corpus, count_tokens, docstring_items, stdlib_sentences
from ..tokens import encode_batch
from .options import BenchOptions

SHORT_MAX_TOKENS = 20


def build_workloads(tokenizer, max_seq_len: int, options: BenchOptions) -> dict[str, list[str]]:
    """short: single docstring sentences of <= 20 tokens; mixed: the verify corpus (docstrings + edge cases,
    shuffled so any prefix is representative); long: documents of stdlib prose that fill max_seq_len."""
    workloads: dict[str, list[str]] = {}
    if "short" in options.workloads:
        pool = [i.text for i in docstring_items(min(len(stdlib_sentences()), 20 * options.short_texts + 50), seed=1)]
        workloads["short"] = [t for t in pool if count_tokens(tokenizer, t) <= SHORT_MAX_TOKENS][:options.short_texts]
    if "mixed" in options.workloads:
        texts = [i.text for i in build_corpus(options.mixed_texts, tokenizer=tokenizer, max_seq_len=max_seq_len)]
        random.Random(0).shuffle(texts)
        workloads["mixed"] = texts
    if "long" in options.workloads:
        sentences = stdlib_sentences()
        docs = []
        for d in range(options.long_texts):
            j, parts = (d * 97) % len(sentences), []
            while count_tokens(tokenizer, " ".join(parts)) < max_seq_len:
                parts.extend(sentences[(j + k) % len(sentences)] for k in range(8))
                j += 8
            docs.append(" ".join(parts))
        workloads["long"] = docs
    return workloads


@dataclass
class Chunk:
    tensors: tuple[torch.Tensor, ...]
    rows: int
    real_tokens: int
    padded_len: int


def token_batches(tokenizer, texts: list[str], batch: int, max_seq_len: int, input_names) -> list[Chunk]:
    chunks = []
    for i in range(0, len(texts), batch):
        arrays = encode_batch(tokenizer, texts[i:i + batch], max_seq_len, input_names)
        tensors = tuple(torch.from_numpy(arrays[n]) for n in input_names)
        mask = arrays["attention_mask"]
        chunks.append(Chunk(tensors, mask.shape[0], int(mask.sum()), mask.shape[1]))
    return chunks
