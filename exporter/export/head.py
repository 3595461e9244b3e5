"""The traceable head: what sentence-transformers computes after the Transformer, built from the module chain.

One function builds it for ``trace``, ``bench`` and every check, so they all compute the chain the export recorded:
pooling (:mod:`.pooling`), each Dense (the reference's own Linear and activation), each LayerNorm (its own
``nn.LayerNorm``), Normalize, and Matryoshka truncation.
"""
from __future__ import annotations

import torch

from .modules import Dense, LayerNorm, ModuleChain, Normalize, Pooling, Truncate
from .pooling import pool


class _Pool(torch.nn.Module):
    def __init__(self, mode: str):
        super().__init__()
        self.mode = mode

    def forward(self, embedding, token_embeddings, attention_mask):
        return pool(self.mode, token_embeddings, attention_mask)


class _Apply(torch.nn.Module):
    """A module on the sentence embedding alone (Linear + activation, LayerNorm)."""

    def __init__(self, *layers: torch.nn.Module):
        super().__init__()
        self.layers = torch.nn.Sequential(*layers)

    def forward(self, embedding, token_embeddings, attention_mask):
        return self.layers(embedding)


class _Normalize(torch.nn.Module):
    def forward(self, embedding, token_embeddings, attention_mask):
        return torch.nn.functional.normalize(embedding, p=2.0, dim=1)


class _Truncate(torch.nn.Module):
    def __init__(self, dims: int):
        super().__init__()
        self.dims = dims

    def forward(self, embedding, token_embeddings, attention_mask):
        return embedding[:, :self.dims]


class Head(torch.nn.Module):
    """``forward(token_embeddings [B, S, H] fp32, attention_mask [B, S])`` -> sentence embeddings ``[B, width]``."""

    def __init__(self, steps: list[torch.nn.Module]):
        super().__init__()
        self.steps = torch.nn.ModuleList(steps)

    def forward(self, token_embeddings, attention_mask):
        embedding = token_embeddings
        for step in self.steps:
            embedding = step(embedding, token_embeddings, attention_mask)
        return embedding


def build_head(chain: ModuleChain, reference) -> Head:
    """The head for ``chain``; Dense and LayerNorm weights are the ``reference``'s own modules (fp32 copies)."""
    import copy

    steps: list[torch.nn.Module] = []
    for index, module in enumerate(chain.modules):
        if isinstance(module, Pooling):
            steps.append(_Pool(module.mode))
        elif isinstance(module, Dense):
            own = reference.head_module(index)
            steps.append(_Apply(copy.deepcopy(own.linear).float(), copy.deepcopy(own.activation_function)))
        elif isinstance(module, LayerNorm):
            steps.append(_Apply(copy.deepcopy(reference.head_module(index).norm).float()))
        elif isinstance(module, Normalize):
            steps.append(_Normalize())
        elif isinstance(module, Truncate):
            steps.append(_Truncate(module.dims))
    return Head(steps).eval()
