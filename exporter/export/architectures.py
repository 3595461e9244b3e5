"""Which encoder architectures can be exported, and what inputs each one's exported forward() takes.

A small registry in the style of optimum's exporter configs: one entry per `config.model_type`.
The exported module's forward() takes exactly these inputs, in this order, so the LibTorch backend
matches config inputs to forward() arguments by name.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import UnsupportedModelError


@dataclass(frozen=True)
class Architecture:
    model_type: str
    input_names: tuple[str, ...]
    # RoBERTa-style models number positions from padding_idx + 1, so fewer positions are usable.
    position_offset: int = 0

    @property
    def uses_token_type_ids(self) -> bool:
        return "token_type_ids" in self.input_names


_IDS_MASK = ("input_ids", "attention_mask")
_IDS_MASK_TYPES = ("input_ids", "attention_mask", "token_type_ids")

_REGISTRY: dict[str, Architecture] = {}


def register(arch: Architecture) -> Architecture:
    _REGISTRY[arch.model_type] = arch
    return arch


register(Architecture("bert", _IDS_MASK_TYPES))
# RoBERTa has a token_type_ids input with a single type: it carries no information, so it is left out.
register(Architecture("roberta", _IDS_MASK, position_offset=2))
register(Architecture("xlm-roberta", _IDS_MASK, position_offset=2))
register(Architecture("camembert", _IDS_MASK, position_offset=2))
register(Architecture("mpnet", _IDS_MASK, position_offset=2))
register(Architecture("distilbert", _IDS_MASK))
register(Architecture("electra", _IDS_MASK_TYPES))


def supported_model_types() -> list[str]:
    return sorted(_REGISTRY)


def architecture_for(model_type: str, where: str | None = None) -> Architecture:
    try:
        return _REGISTRY[model_type]
    except KeyError:
        raise UnsupportedModelError(
            f"architecture '{model_type}' is not supported for TorchScript export",
            fix=f"use a model whose config.json model_type is one of: {', '.join(supported_model_types())}",
            where=where,
        ) from None
