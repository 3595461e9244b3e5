"""The module that is traced: encoder -> the sentence-transformers head (:mod:`.head`), returning a Tensor (never a
dict).

Its forward() arguments are named exactly like the model's inputs, because the LibTorch backend matches
config inputs to forward() argument names; tracing keeps those names.
"""
from __future__ import annotations

import torch


class _Embedding(torch.nn.Module):
    def __init__(self, encoder: torch.nn.Module, head: torch.nn.Module, token_embeddings: bool = False,
                 output_dtype: torch.dtype = torch.float32, masks: torch.nn.Module | None = None):
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.masks = masks  # builds the encoder's attention masks where its own code cannot be traced
        self.token_embeddings = token_embeddings
        self.output_dtype = output_dtype

    def _embed(self, input_ids, attention_mask, token_type_ids=None):
        # Inputs may be declared INT32 in the Triton config; embeddings want int64 indices.
        input_ids = input_ids.long()
        attention_mask = attention_mask.long()
        kwargs = {"input_ids": input_ids,
                  "attention_mask": attention_mask if self.masks is None else self.masks(attention_mask)}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids.long()
        # The head runs in fp32 even when the encoder runs in bf16/fp16: sums over many tokens lose precision otherwise.
        hidden = self.encoder(**kwargs).last_hidden_state.float()
        embedding = self.head(hidden, attention_mask).to(self.output_dtype)
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


def build_wrapper(encoder: torch.nn.Module, input_names: tuple[str, ...], head: torch.nn.Module,
                  token_embeddings: bool = False, output_dtype: torch.dtype = torch.float32,
                  zero_token_types: bool = False, masks: torch.nn.Module | None = None) -> _Embedding:
    """The module to trace; ``zero_token_types`` drops a ``token_type_ids`` argument and feeds zeros instead."""
    if "token_type_ids" in input_names:
        cls = EmbeddingZeroTypes if zero_token_types else EmbeddingWithTypes
    else:
        cls = EmbeddingIdsMask
    return cls(encoder, head, token_embeddings, output_dtype, masks).eval()


def wrapper_for(spec, reference, encoder: torch.nn.Module | None = None, token_embeddings: bool = False,
                output_dtype: torch.dtype = torch.float32, zero_token_types: bool = False) -> _Embedding:
    """The traceable export of ``spec``: ``encoder`` (the reference's own, or a copy in another precision) and the
    head of the spec's module chain. trace, bench and the checks all build it here."""
    from .attention_masks import mask_builder
    from .head import build_head

    encoder = encoder if encoder is not None else reference.encoder
    return build_wrapper(encoder, spec.input_names, build_head(spec.chain, reference), token_embeddings, output_dtype,
                         zero_token_types, mask_builder(spec.architecture.attention_masks, encoder.config))
