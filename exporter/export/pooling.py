"""Pooling of token embeddings into one sentence embedding: small, pure, traceable tensor code.

Semantics follow sentence-transformers' Pooling module (the reference that parity is checked against):
CLS takes the first *real* token (correct with left padding), last-token the last real token.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

POOLING_MODES = ("cls", "mean", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")

# Spellings found in sentence-transformers configs and on our CLI, mapped to one canonical name.
_ALIASES = {
    "cls_token": "cls",
    "mean_tokens": "mean",
    "max_tokens": "max",
    "mean_sqrt_len": "mean_sqrt_len_tokens",
    "weighted_mean": "weightedmean",
    "weighted-mean": "weightedmean",
    "last_token": "lasttoken",
    "last-token": "lasttoken",
    "mean-sqrt-len": "mean_sqrt_len_tokens",
}


def canonical_pooling(name: str) -> str | None:
    """The canonical pooling name for ``name``, or None when it is not a pooling mode."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    return key if key in POOLING_MODES else None


def pool(mode: str, token_embeddings: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Pool ``token_embeddings`` [B, S, H] with ``attention_mask`` [B, S] (1 = real token) into [B, H]."""
    import torch  # here, not at the top: the CLI lists POOLING_MODES in --help without loading torch

    hidden = token_embeddings.shape[-1]
    if mode == "cls":
        first = attention_mask.to(torch.int32).argmax(dim=1)
        return torch.gather(token_embeddings, 1, first.view(-1, 1, 1).expand(-1, 1, hidden)).squeeze(1)
    if mode == "lasttoken":
        seq_len = token_embeddings.shape[1]
        values, from_end = attention_mask.to(torch.int32).flip(1).max(dim=1)
        from_end = torch.where(values == 0, torch.full_like(from_end, seq_len - 1), from_end)
        last = seq_len - 1 - from_end
        masked = token_embeddings * attention_mask.unsqueeze(-1).to(token_embeddings.dtype)
        return torch.gather(masked, 1, last.view(-1, 1, 1).expand(-1, 1, hidden)).squeeze(1)
    if mode == "max":
        keep = attention_mask.unsqueeze(-1).to(torch.bool)
        return token_embeddings.masked_fill(~keep, float("-inf")).max(dim=1).values
    mask = attention_mask.unsqueeze(-1).to(token_embeddings.dtype)
    if mode in ("mean", "mean_sqrt_len_tokens"):
        summed = (token_embeddings * mask).sum(dim=1)
        count = mask.sum(dim=1).clamp(min=1e-9)
        return summed / (count if mode == "mean" else torch.sqrt(count))
    if mode == "weightedmean":
        positions = torch.arange(
            1, token_embeddings.shape[1] + 1, dtype=token_embeddings.dtype, device=token_embeddings.device
        )
        # Weights count from the first real token, so left padding does not shift them.
        pad = attention_mask.to(torch.int32).argmax(dim=1).to(token_embeddings.dtype)
        weights = mask * (positions.view(1, -1, 1) - pad.view(-1, 1, 1))
        return (token_embeddings * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
    raise ValueError(f"unknown pooling mode {mode!r}; expected one of {', '.join(POOLING_MODES)}")
