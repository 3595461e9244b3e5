"""The traceable head: what sentence-transformers computes after the Transformer, built from the module chain.

One function builds it for ``trace``, ``bench`` and every check, so they all compute the chain the export recorded.
Each kind of module says what it computes (``step`` in :mod:`.modules`, from :mod:`.steps`); here is the loop.
"""
from __future__ import annotations

import torch

from .modules import ModuleChain
from .steps import PoolStep


class Head(torch.nn.Module):
    """``forward(token_embeddings [B, S, H] fp32, attention_mask [B, S])`` -> sentence embeddings ``[B, width]``:
    pooling, then each step on the pooled embedding in the chain's order."""

    def __init__(self, pooling: PoolStep, steps: list[torch.nn.Module]):
        super().__init__()
        self.pooling = pooling
        self.steps = torch.nn.Sequential(*steps)

    def forward(self, token_embeddings, attention_mask):
        return self.steps(self.pooling(token_embeddings, attention_mask))


def build_head(chain: ModuleChain, reference) -> Head:
    """The head for ``chain``; steps with weights take them from the ``reference``'s own modules (fp32 copies)."""
    loaded = [reference.head_module(i) if i < len(chain.before_truncation()) else None
              for i in range(len(chain.modules))]
    steps = [m.step(own) for m, own in zip(chain.modules, loaded)]
    first = steps[0]
    if not isinstance(first, PoolStep):
        raise ValueError(f"the module chain must start with Pooling, not {chain.modules[0].kind}")
    return Head(first, steps[1:]).eval()
