"""The module that is traced: encoder -> pooling -> optional L2 normalisation, returning a Tensor (never a dict).

Its forward() arguments are named exactly like the model's inputs, because the LibTorch backend matches
config inputs to forward() argument names; tracing keeps those names.
"""
from __future__ import annotations

import torch

from .pooling import pool


class _Embedding(torch.nn.Module):
    def __init__(self, encoder: torch.nn.Module, pooling: str, normalize: bool, token_embeddings: bool = False,
                 output_dtype: torch.dtype = torch.float32):
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling
        self.normalize = normalize
        self.token_embeddings = token_embeddings
        self.output_dtype = output_dtype

    def _embed(self, input_ids, attention_mask, token_type_ids=None):
        # Inputs may be declared INT32 in the Triton config; embeddings want int64 indices.
        input_ids = input_ids.long()
        attention_mask = attention_mask.long()
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids.long()
        # Pool in fp32 even when the encoder runs in bf16/fp16: sums over many tokens lose precision otherwise.
        hidden = self.encoder(**kwargs).last_hidden_state.float()
        embedding = pool(self.pooling, hidden, attention_mask)
        if self.normalize:
            embedding = torch.nn.functional.normalize(embedding, p=2.0, dim=1)
        embedding = embedding.to(self.output_dtype)
        if self.token_embeddings:
            tokens = hidden * attention_mask.unsqueeze(-1).to(hidden.dtype)
            return embedding, tokens.to(self.output_dtype)
        return embedding


class EmbeddingWithTypes(_Embedding):
    def forward(self, input_ids, attention_mask, token_type_ids):
        return self._embed(input_ids, attention_mask, token_type_ids)


class EmbeddingIdsMask(_Embedding):
    def forward(self, input_ids, attention_mask):
        return self._embed(input_ids, attention_mask)


class EmbeddingZeroTypes(_Embedding):
    """A model with token types, fed zeros: what its tokenizer gives every single text (types differ only in text
    pairs, which embedding models are not given), so the ragged export need not carry them per request."""

    def forward(self, input_ids, attention_mask):
        return self._embed(input_ids, attention_mask, torch.zeros_like(input_ids))


def build_wrapper(
    encoder: torch.nn.Module,
    input_names: tuple[str, ...],
    pooling: str,
    normalize: bool,
    token_embeddings: bool = False,
    output_dtype: torch.dtype = torch.float32,
    zero_token_types: bool = False,
) -> _Embedding:
    """The module to trace; ``zero_token_types`` drops a ``token_type_ids`` argument and feeds zeros instead."""
    if "token_type_ids" in input_names:
        cls = EmbeddingZeroTypes if zero_token_types else EmbeddingWithTypes
    else:
        cls = EmbeddingIdsMask
    return cls(encoder, pooling, normalize, token_embeddings, output_dtype).eval()
