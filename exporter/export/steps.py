"""The torch modules the head is made of, one per kind of computation (:mod:`.modules` says which kind uses which).
Traceable, small, and free of the chain's bookkeeping, so :mod:`.modules` and :mod:`.head` both import them."""
from __future__ import annotations

import torch

from .pooling import pool


class PoolStep(torch.nn.Module):
    """Token embeddings and mask -> one row per text (:mod:`.pooling`)."""

    def __init__(self, mode: str):
        super().__init__()
        self.mode = mode

    def forward(self, token_embeddings, attention_mask):
        return pool(self.mode, token_embeddings, attention_mask)


class NormalizeStep(torch.nn.Module):
    def forward(self, embedding):
        return torch.nn.functional.normalize(embedding, p=2.0, dim=1)


class TruncateStep(torch.nn.Module):
    def __init__(self, dims: int):
        super().__init__()
        self.dims = dims

    def forward(self, embedding):
        return embedding[:, :self.dims]
