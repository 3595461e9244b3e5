"""`trace --precision fp32|bf16|int8`: the lossy exports and the quality gate they are held to.

fp32 is checked against sentence-transformers with the fp32 bound, as always. A bf16 or int8 export is checked twice:
the traced module against its own eager module with the fp32 bound (the trace recorded the right graph), then the
eager module against the fp32 model on at least 1,000 real texts with the precision's quality gate
(:mod:`exporter.checks.quality`). Short of the gate nothing is written. bf16 is today's ``--dtype bfloat16`` path;
int8 replaces the encoder's Linear layers (:mod:`exporter.export.quantize`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..checks.parity import TOLERANCES, Tolerance, tolerance_for
from ..checks.quality import (GateBounds, QualityReport, default_bounds, embed, gate_corpus, measure,
                              row_independence, token_batches)
from ..errors import QualityError, UnsupportedModelError
from .quantize import DEFAULT_ALPHA, QuantizePlan, layer_errors, quantize_int8

PRECISIONS = ("fp32", "bf16", "int8")
# Processor flags with a fast path for the precision's GEMM (oneDNN uses them); without one it runs, slower.
FAST_PATH_FLAGS = {"int8": ("amx_int8", "avx512_vnni", "avx_vnni"), "bf16": ("amx_bf16", "avx512_bf16")}
INDEPENDENCE_TEXTS = 8  # texts checked alone and inside a batch

Progress = Callable[[str], None]


@dataclass(frozen=True)
class PrecisionOptions:
    """How a lossy export is made and gated (``trace --min-cosine/--min-overlap/--calibration/--smooth/...``)."""

    min_cosine: float | None = None  # None: the precision's default gate
    min_overlap: float | None = None
    calibration: Path | None = None  # one text per line; default: the verify corpus
    smooth: float | None = DEFAULT_ALPHA  # int8: SmoothQuant migration strength; None or 0: no smoothing
    fp32_layers: tuple[str, ...] = ()  # int8: Linear layers (shell patterns of their names) left in fp32


def validate_precision(options) -> None:
    """Refuse combinations no gate was built for; ``options`` is an ExportOptions."""
    where = f"--precision {options.precision}"
    if options.precision not in PRECISIONS:
        raise UnsupportedModelError(f"unknown precision '{options.precision}'", where="--precision",
                                    fix=f"use one of {', '.join(PRECISIONS)}")
    if options.precision == "fp32":
        return
    if options.dtype != "float32":
        raise UnsupportedModelError("--precision sets the compute precision itself", where=where,
                                    fix="drop --dtype (or use --dtype alone without --precision)")
    if not options.device.startswith("cpu"):
        raise UnsupportedModelError("the bf16 and int8 exports are CPU exports", where=where,
                                    fix="trace with --device cpu, or use --dtype float16/bfloat16 for a GPU")
    if options.format != "torchscript":
        raise UnsupportedModelError("the low-precision exports are TorchScript models", where=where,
                                    fix="drop --format pt2")
    p = options.precision_options
    for name, value in (("--min-cosine", p.min_cosine), ("--min-overlap", p.min_overlap)):
        if value is not None and not 0.0 <= value <= 1.0:
            raise UnsupportedModelError(f"{name} {value} is not between 0 and 1", where=name,
                                        fix=f"pass {name} with a value in [0, 1]")
    if options.precision != "int8" and p.fp32_layers:
        raise UnsupportedModelError("--fp32-layers names layers an int8 export leaves in fp32", where=where,
                                    fix="add --precision int8, or drop --fp32-layers")


def resolve_precision(options):
    """``options`` with the dtype a precision computes in: bf16 is today's ``--dtype bfloat16`` path."""
    if options.precision == "bf16":
        return dataclasses.replace(options, dtype="bfloat16")
    return options


def recorded_dtype(options) -> str:
    """tei_export.json's ``dtype``: the compute precision, "int8" for an int8 export (its GEMMs; the rest is fp32)."""
    return "int8" if options.precision == "int8" else options.dtype


def served_tolerance(meta) -> Tolerance:
    """The bound a served export is held to against fp32 eager: the quality gate it recorded (min cosine) for a
    bf16 or int8 export, else its dtype's parity bound."""
    quality = meta.parity.get("quality") if isinstance(meta.parity, dict) else None
    if quality:
        return Tolerance(max_abs=None, min_cosine=float(quality["bounds"]["min_cosine"]))
    return tolerance_for(meta.dtype, meta.device)


def fast_path_warning(precision: str, flags: set[str] | None = None) -> str | None:
    """A warning when this CPU has none of the flags that make ``precision`` fast (None: it has one, or the
    flags cannot be read)."""
    if precision not in FAST_PATH_FLAGS:
        return None
    if flags is None:
        from ..bench.machine import cpu_info

        flags = cpu_info()[1]
    wanted = FAST_PATH_FLAGS[precision]
    if not flags or any(f in flags for f in wanted):
        return None
    return (f"this CPU has none of {', '.join(wanted)} (/proc/cpuinfo): the {precision} model is exported and "
            f"gated, but its GEMMs have no fast path here and it will likely run no faster than fp32")


def apply_precision(encoder: torch.nn.Module, spec, options, tokenizer, progress: Progress | None = None
                    ) -> tuple[torch.nn.Module, QuantizePlan | None]:
    """The encoder the export traces: int8 layers for ``--precision int8`` (smoothed on every 4th gate text),
    else ``encoder`` itself (bf16 is cast by the dtype path)."""
    if options.precision != "int8":
        return encoder, None
    p = options.precision_options
    alpha = p.smooth or None
    calibration = None
    if alpha is not None:
        items, _ = gate_corpus(tokenizer, spec.max_seq_len, p.calibration)
        calibration, _ = token_batches(tokenizer, [i.text for i in items[::4]], spec.input_names, spec.max_seq_len)
        _say(progress, f"calibrating int8 smoothing (alpha {alpha:g}) on {len(items[::4])} texts")
    return quantize_int8(encoder, p.fp32_layers, calibration, alpha)


class OwnModule:
    """The eager low-precision module in the reference's place, for the trace's shape-grid check: ``__call__``
    (tokenized features), ``preprocess`` and ``encode`` as sentence-transformers offers them."""

    def __init__(self, reference, module: torch.nn.Module, input_names: tuple[str, ...]):
        self.reference, self.module, self.input_names = reference, module, input_names

    @property
    def tokenizer(self):
        return self.reference.tokenizer

    def embed(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        zeros = torch.zeros_like(features["input_ids"])  # token types: some tokenizers do not return them
        with torch.inference_mode():
            out = self.module(*(features.get(n, zeros) for n in self.input_names))
        return (out[0] if isinstance(out, tuple) else out).float()

    def preprocess(self, texts):
        return self.reference.preprocess(texts)

    def encode(self, texts, batch_size: int = 32, prompt: str = "", prompt_name: str | None = None):
        if prompt_name is not None:
            prompt = self.reference.model.prompts[prompt_name]
        return self.embed(self.reference.preprocess([prompt + t for t in texts])).cpu().numpy()


def check_target(options, reference, wrapper, input_names: tuple[str, ...]) -> tuple[object, Tolerance]:
    """What the trace is checked against, with which bound: sentence-transformers for fp32 (and a plain
    ``--dtype``), the eager low-precision module with the fp32 bound for ``--precision bf16|int8``."""
    if options.precision == "fp32":
        return reference, tolerance_for(options.dtype, options.device)
    return OwnModule(reference, wrapper, input_names), TOLERANCES["float32"]


def quality_gate(options, spec, reference, wrapper, input_names: tuple[str, ...], plan: QuantizePlan | None,
                 progress: Progress | None = None) -> QualityReport | None:
    """The gate for a bf16 or int8 export (None for fp32); raises QualityError, with the table, when it fails.

    ``wrapper`` is the eager low-precision module (called with ``input_names``), ``reference`` the fp32
    sentence-transformers model.
    """
    if options.precision == "fp32":
        return None
    p = options.precision_options
    bounds: GateBounds = default_bounds(options.precision, p.min_cosine, p.min_overlap)
    tokenizer = reference.tokenizer
    items, corpus = gate_corpus(tokenizer, spec.max_seq_len, p.calibration)
    texts = [i.text for i in items]
    _say(progress, f"quality gate: {options.precision} vs fp32 on {len(texts)} texts")
    batches, order = token_batches(tokenizer, texts, spec.input_names, spec.max_seq_len)
    expected = embed(lambda *args: reference.embed(dict(zip(spec.input_names, args))), batches,
                     order, spec.input_names)
    actual = embed(wrapper, batches, order, input_names)
    independence = row_independence(wrapper, tokenizer, texts[:INDEPENDENCE_TEXTS], input_names, spec.max_seq_len)
    report = measure(options.precision, bounds, items, expected, actual, independence, corpus)
    if plan is not None:
        report.extra = {"int8": plan.to_dict()}
    if not report.passed:
        if plan is not None:
            report.layers = layer_errors(wrapper.encoder, reference.encoder, batches[::8])[:12]
        raise QualityError(f"the {options.precision} model misses its quality gate against fp32; nothing was "
                           f"written\n{report.table()}", report,
                           fix=_fix_for(options.precision))
    return report


def _fix_for(precision: str) -> str:
    if precision == "int8":
        return ("keep the worst layers in fp32 (--fp32-layers 'NAME', repeatable, shell patterns), change the "
                "smoothing (--smooth 0.5..0.85), try --precision bf16, or lower the gate (--min-cosine, "
                "--min-overlap) if that quality is enough for you")
    return "use --precision fp32, or lower the gate with --min-cosine if that quality is enough for you"


def record_quality(parity: dict, quality: QualityReport | None) -> dict:
    """The parity record of tei_export.json with the measured quality beside it (``parity["quality"]``)."""
    return parity if quality is None else {**parity, "quality": quality.to_dict()}


def quality_header(config_text: str, quality: QualityReport | None) -> str:
    """config.pbtxt with a comment line after the generated-by header that states the measured quality."""
    if quality is None:
        return config_text
    first, _, rest = config_text.partition("\n")
    return f"{first}\n# Precision {quality.summary()}.\n{rest}"


def _say(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)


def merge_dependence_warning(precision: str, ragged: bool, graph_text: bool) -> str | None:
    """A bf16/int8 model that pads each merged chunk to its longest text (a ragged export, the graph text model)
    gives a text's row a value that moves with what Triton merged it with: an fp32 rounding difference in attention
    flips a low-precision rounding (2.35e-3 measured for int8 MiniLM, alone against among 8 texts). Within the gate,
    but not bit-stable; a padded export of the token model is."""
    if precision == "fp32" or not (ragged or graph_text):
        return None
    where = "a ragged export" if ragged else "the graph text model"
    return (f"{precision} in {where}: each merged chunk is padded to its longest text, so a text's row moves (within "
            f"the quality gate, ~1e-3) with what Triton merges it with; for rows that never depend on the batch, "
            f"serve the padded token model (without --batching ragged, with --tokenizer python for text in)")
