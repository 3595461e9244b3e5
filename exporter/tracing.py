"""Tracing the embedding module to TorchScript, and checking the trace at many shapes against the reference.

A trace records one execution, so anything shape- or value-dependent that it froze shows up as a mismatch
at another batch size, sequence length or padding side. The grid below covers what Triton will send.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from .errors import UnsupportedModelError, first_line
from .parity import ParityReport, Tolerance
from .reference import reference_embeddings


@dataclass(frozen=True)
class ShapeCase:
    name: str
    batch: int
    seq_len: int
    padding: str  # "none", "right" or "left"


def shape_cases(max_batch_size: int, max_seq_len: int, max_positions: int | None = None) -> list[ShapeCase]:
    short = min(12, max_seq_len)
    mid = min(37, max_seq_len)
    cases = [
        ShapeCase("one token", 1, 1, "none"),
        ShapeCase("batch 1, short", 1, short, "none"),
        ShapeCase("odd batch, mixed lengths", 3, mid, "right"),
        ShapeCase("left padding", 5, mid, "left"),
        ShapeCase("max batch", max_batch_size, short, "right"),
        ShapeCase("max length", 2, max_seq_len, "right"),
    ]
    if max_positions and max_positions > max_seq_len:
        # Clients truncate to max_seq_len, but Triton accepts any length up to what positions address.
        cases.append(ShapeCase("position limit", 1, max_positions, "none"))
    return [c for c in cases if c.batch <= max_batch_size]


def make_inputs(
    case: ShapeCase, input_names: tuple[str, ...], vocab_size: int, pad_id: int, dtype: torch.dtype, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Token tensors for ``case``: random ids, real lengths from 1 to seq_len, padded on the case's side."""
    gen = torch.Generator().manual_seed(seed + case.batch * 1009 + case.seq_len)
    low = min(1000, max(vocab_size // 2, 1))
    ids = torch.randint(low, vocab_size, (case.batch, case.seq_len), generator=gen)
    mask = torch.ones_like(ids)
    if case.padding != "none" and case.seq_len > 1:
        lengths = torch.linspace(case.seq_len, 1, case.batch).round().long()
        for row, length in enumerate(lengths.tolist()):
            pad = slice(length, None) if case.padding == "right" else slice(0, case.seq_len - length)
            mask[row, pad] = 0
            ids[row, pad] = pad_id
    features = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in input_names:
        features["token_type_ids"] = torch.zeros_like(ids)
    return {name: features[name].to(dtype) for name in input_names}


def trace(wrapper: torch.nn.Module, example: dict[str, torch.Tensor]) -> torch.jit.ScriptModule:
    """TorchScript trace of ``wrapper`` with ``example`` inputs (which must include real padding)."""
    args = tuple(example.values())
    try:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            # The tracer warns about every Python-side shape check in transformers' code; the shape grid
            # check after tracing is what decides whether the trace is right.
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(wrapper, args, check_trace=False, strict=False)
    except Exception as err:
        raise UnsupportedModelError(
            f"the model cannot be traced to TorchScript: {type(err).__name__}: {first_line(err, 300)}",
            fix="this architecture needs a different export path; try another model or report the architecture",
        ) from err
    return traced


def check_trace(
    traced,
    reference,
    cases: list[ShapeCase],
    input_names: tuple[str, ...],
    vocab_size: int,
    pad_id: int,
    input_dtype: torch.dtype,
    tolerance: Tolerance,
    device: str = "cpu",
) -> ParityReport:
    """Run ``traced`` and the eager ``reference`` on identical token tensors for every case."""
    report = ParityReport(tolerance)
    for case in cases:
        inputs = make_inputs(case, input_names, vocab_size, pad_id, input_dtype)
        with torch.inference_mode():
            out = traced(*(t.to(device) for t in inputs.values()))
        embedding = out[0] if isinstance(out, tuple) else out
        expected = reference_embeddings(reference, {k: v.long().to(device) for k, v in inputs.items()})
        report.add(case.name, expected, embedding, seq_len=case.seq_len)
    return report
