"""Attention masks that a family's own code builds in a way tracing cannot record, built index-based instead.

Gemma 3 with ``use_bidirectional_attention`` (EmbeddingGemma) makes its masks through ``torch.vmap`` over an
"or" mask function, which ``torch.jit.trace`` fails on ("unordered_map::at"). The model also accepts the masks
ready-made, one per layer type; these are the same boolean masks (True = attend, as transformers gives sdpa):
full layers see every real token, sliding layers every real token within ``sliding_window`` positions either side.
The export's shape grid checks them against the reference, which builds its own.
"""
from __future__ import annotations

from typing import Dict

import torch
from torch import Tensor


class BidirectionalWindowMasks(torch.nn.Module):
    def __init__(self, sliding_window: int):
        super().__init__()
        self.sliding_window = sliding_window

    def forward(self, attention_mask: Tensor) -> Dict[str, Tensor]:
        length = attention_mask.shape[1]
        positions = torch.arange(length, device=attention_mask.device)
        keep = attention_mask.bool()[:, None, None, :]  # [batch, 1, 1, keys]: padding is never attended to
        near = (positions[:, None] - positions[None, :]).abs() < self.sliding_window
        return {"full_attention": keep.expand(-1, 1, length, length), "sliding_attention": keep & near[None, None]}


def mask_builder(kind: str, config) -> torch.nn.Module | None:
    """The builder a registry entry names (``Architecture.attention_masks``) when the model's config needs it."""
    if kind == "bidirectional_window" and getattr(config, "use_bidirectional_attention", False):
        if getattr(config, "_attn_implementation", "sdpa") != "sdpa":
            return None  # eager attention takes additive float masks; its own (vmap) path is left to fail clearly
        return BidirectionalWindowMasks(int(config.sliding_window))
    return None
