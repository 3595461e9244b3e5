"""int8 Linear layers that TorchScript traces and LibTorch runs: per-channel int8 weights, per-token activations.

``torch.ao.quantization.quantize_dynamic`` scales each activation tensor as a whole, so the outlier channels of
these encoders swamp the rest (all-mpnet-base-v2 fell to min cosine 0.2-0.35 against fp32), and a row's result
depends on what else is in the batch. Here every token (row of the flattened activation) gets its own scale from its
own values, so a row never depends on the batch, and the GEMM is ``aten::_int_mm`` (int8 x int8 -> int32), an op of
libtorch_cpu that NVIDIA's LibTorch backend runs as it is. Optional SmoothQuant-style smoothing moves part of each
input channel's range from the activation into the weight, calibrated on texts (``smoothing_scales``).
"""
from __future__ import annotations

import copy
import fnmatch
from dataclasses import dataclass, field

import torch

from ..errors import UnsupportedModelError

QMAX = 127.0
# Smallest activation scale: a token whose values are all zero (or nearly) quantizes to zeros, not NaN.
MIN_SCALE = 1e-8
# SmoothQuant's migration strength; of 0.5, 0.7 and 0.85, 0.7 kept both MiniLM and MPNet closest to fp32
DEFAULT_ALPHA = 0.7


class Int8Linear(torch.nn.Module):
    """``y = x W^T + b`` with W as int8 per output channel and x quantized per token (symmetric, 127 levels).

    The weight is kept as ``[out, in]`` and passed to ``_int_mm`` transposed: that layout ran the int8 GEMM twice as
    fast as a ``[in, out]`` contiguous one here (oneDNN reads it as the packed B it wants).
    """

    def __init__(self, linear: torch.nn.Linear, smooth: torch.Tensor | None = None):
        super().__init__()
        weight = linear.weight.detach().float()
        if smooth is not None:
            # x / s  times  (W * s)^T equals x W^T; s (per input channel) divides the activation's outliers.
            weight = weight * smooth.float()
            self.register_buffer("inv_smooth", (1.0 / smooth.float()).contiguous())
        else:
            self.inv_smooth = None
        scale = weight.abs().amax(dim=1).clamp(min=MIN_SCALE) / QMAX
        self.register_buffer("qweight", torch.round(weight / scale[:, None]).clamp(-QMAX, QMAX).to(torch.int8)
                             .contiguous())
        self.register_buffer("weight_scale", scale.contiguous())
        bias = linear.bias.detach().float() if linear.bias is not None else None
        self.register_buffer("bias", bias)
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).float()
        if self.inv_smooth is not None:
            flat = flat * self.inv_smooth
        # One scale per row (token): its own max |value|, so other rows of the batch never change it. Each pass
        # over the activations costs about as much as the int8 GEMM on a small encoder, so there are few: |x| / scale
        # is <= 127 by construction (no clamp), and the rescale works in place.
        amax = flat.abs().amax(dim=1, keepdim=True).clamp(min=MIN_SCALE)
        q = torch.round(flat * (QMAX / amax)).to(torch.int8)
        out = torch._int_mm(q, self.qweight.t()).float().mul_(amax / QMAX)
        if self.bias is not None:
            out = torch.addcmul(self.bias, out, self.weight_scale)
        else:
            out = out.mul_(self.weight_scale)
        return out.reshape(x.shape[:-1] + (self.out_features,)).to(x.dtype)


class Int8Embedding(torch.nn.Module):
    """A lookup table stored as int8 rows with one fp32 scale per row: the word embeddings are most of a small
    encoder's file (all-MiniLM-L6-v2: 12 M of its 23 M parameters), and a row is read, never multiplied, so its
    rounding error stays that row's own."""

    def __init__(self, embedding: torch.nn.Embedding):
        super().__init__()
        weight = embedding.weight.detach().float()
        scale = weight.abs().amax(dim=1).clamp(min=MIN_SCALE) / QMAX
        self.register_buffer("qweight", torch.round(weight / scale[:, None]).to(torch.int8).contiguous())
        self.register_buffer("scale", scale.unsqueeze(1).contiguous())
        self.num_embeddings, self.embedding_dim = embedding.num_embeddings, embedding.embedding_dim

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.embedding(ids, self.qweight).float() * torch.nn.functional.embedding(ids,
                                                                                                     self.scale)


# Tables at least this long are vocabularies (quantized); position and token-type tables are small and stay fp32.
MIN_VOCABULARY = 1000


@dataclass
class QuantizePlan:
    """What ``quantize_int8`` did: the layers it replaced, those it left in fp32 and whether it smoothed."""

    quantized: list[str] = field(default_factory=list)
    kept_fp32: list[str] = field(default_factory=list)
    embeddings: list[str] = field(default_factory=list)  # vocabulary tables stored as int8 rows
    smoothed: bool = False
    alpha: float | None = None

    def to_dict(self) -> dict:
        return {"quantized": len(self.quantized), "kept_fp32": list(self.kept_fp32),
                "int8_embeddings": list(self.embeddings), "smoothing": self.smoothed,
                "alpha": self.alpha}


def linear_layers(model: torch.nn.Module) -> dict[str, torch.nn.Linear]:
    """Every ``nn.Linear`` of ``model`` by qualified name, in module order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


def matches(name: str, patterns: tuple[str, ...]) -> bool:
    """``name`` matches one of the shell-style ``patterns`` (``encoder.layer.5.*``, ``*.output.dense``)."""
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def activation_ranges(model: torch.nn.Module, batches, names: list[str]) -> dict[str, torch.Tensor]:
    """Per input channel max |x| that each named Linear sees over ``batches`` (dicts of model inputs), padding
    tokens excluded (they are never read by the pooling, so their outliers must not set the smoothing)."""
    layers = linear_layers(model)
    ranges: dict[str, torch.Tensor] = {}
    current_mask: list[torch.Tensor] = []

    def hook(name):
        def record(_module, inputs, _output):
            x = inputs[0].detach().float()
            keep = current_mask[0].reshape(-1).bool()
            flat = x.reshape(-1, x.shape[-1])
            if keep.numel() == flat.shape[0]:
                flat = flat[keep]
            top = flat.abs().amax(dim=0) if flat.numel() else torch.zeros(x.shape[-1])
            ranges[name] = torch.maximum(ranges[name], top) if name in ranges else top
        return record

    handles = [layers[n].register_forward_hook(hook(n)) for n in names]
    try:
        with torch.inference_mode():
            for batch in batches:
                current_mask[:] = [batch["attention_mask"]]
                model(**batch)
    finally:
        for h in handles:
            h.remove()
    return ranges


def smoothing_scales(act_max: torch.Tensor, weight: torch.Tensor, alpha: float = DEFAULT_ALPHA) -> torch.Tensor:
    """SmoothQuant's per input channel s = max|x|^alpha / max|W|^(1-alpha), clamped away from 0."""
    w_max = weight.detach().float().abs().amax(dim=0).clamp(min=1e-5)
    s = act_max.clamp(min=1e-5).pow(alpha) / w_max.pow(1.0 - alpha)
    return s.clamp(min=1e-5)


def quantize_int8(encoder: torch.nn.Module, keep_fp32: tuple[str, ...] = (), calibration=None,
                  alpha: float | None = None) -> tuple[torch.nn.Module, QuantizePlan]:
    """A copy of ``encoder`` with every Linear but those matching ``keep_fp32`` replaced by an ``Int8Linear``.

    With ``alpha`` and ``calibration`` (an iterable of input dicts), each replaced layer is smoothed first.
    """
    model = copy.deepcopy(encoder).float().eval()
    plan = QuantizePlan(smoothed=alpha is not None, alpha=alpha)
    layers = linear_layers(model)
    tables = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Embedding)]
    unmatched = [p for p in keep_fp32 if not any(fnmatch.fnmatchcase(n, p) for n in [*layers, *tables])]
    if unmatched:  # a typo would otherwise quantize the very layer the user meant to keep
        raise UnsupportedModelError(f"{', '.join(map(repr, unmatched))} names no Linear or embedding layer of the "
                                    f"model", where="--fp32-layers",
                                    fix=f"use names such as {', '.join(list(layers)[:3])} (shell patterns allowed)")
    for name in layers:
        (plan.kept_fp32 if matches(name, keep_fp32) else plan.quantized).append(name)
    ranges = activation_ranges(model, calibration, plan.quantized) if alpha is not None else {}
    for name in plan.quantized:
        smooth = smoothing_scales(ranges[name], layers[name].weight, alpha) if name in ranges else None
        _replace(model, name, Int8Linear(layers[name], smooth))
    for name, table in list(model.named_modules()):
        if isinstance(table, torch.nn.Embedding) and table.num_embeddings >= MIN_VOCABULARY:
            if matches(name, keep_fp32):
                plan.kept_fp32.append(name)
            else:
                plan.embeddings.append(name)
                _replace(model, name, Int8Embedding(table))
    return model, plan


def _replace(model: torch.nn.Module, name: str, module: torch.nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def layer_errors(quantized: torch.nn.Module, original: torch.nn.Module, batches) -> list[dict]:
    """Each int8 layer's relative output error ||y_int8 - y_fp32|| / ||y_fp32|| on its own inputs over ``batches``,
    worst first: the layers to keep in fp32 when the gate fails."""
    fp32 = linear_layers(original)
    sums: dict[str, list[float]] = {}

    def hook(name):
        def record(_module, inputs, output):
            layer = fp32[name]
            exact = torch.nn.functional.linear(inputs[0].float(), layer.weight.float(),
                                               None if layer.bias is None else layer.bias.float())
            acc = sums.setdefault(name, [0.0, 0.0])
            acc[0] += float((output.float() - exact).pow(2).sum())
            acc[1] += float(exact.pow(2).sum())
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in quantized.named_modules()
               if isinstance(m, Int8Linear) and n in fp32]
    try:
        with torch.inference_mode():
            for batch in batches:
                quantized(**batch)
    finally:
        for h in handles:
            h.remove()
    errors = [{"layer": n, "error": (num / den) ** 0.5 if den > 0 else 0.0} for n, (num, den) in sums.items()]
    return sorted(errors, key=lambda e: -e["error"])
