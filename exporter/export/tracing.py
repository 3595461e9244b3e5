"""Tracing the embedding module to TorchScript, and checking the trace at many shapes against the reference.

A trace records one execution, so anything shape- or value-dependent that it froze shows up as a mismatch
at another batch size, sequence length or padding side. The grid below covers what Triton will send.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from ..checks.parity import ParityReport, Tolerance
from ..errors import UnsupportedModelError, first_line
from .ragged import pack, pad_right


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
    ids = _random_ids(gen, vocab_size, (case.batch, case.seq_len))
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


def _random_ids(gen: torch.Generator, vocab_size: int, shape: tuple[int, ...]) -> torch.Tensor:
    # Ordinary tokens: above the special and unused ids that BERT-style vocabularies put first.
    low = min(1000, max(vocab_size // 2, 1))
    return torch.randint(low, vocab_size, shape, generator=gen)


@dataclass(frozen=True)
class RaggedCase:
    """Merged requests as a ragged model receives them: one text per request, ``lengths`` tokens each, in order."""

    name: str
    lengths: tuple[int, ...]


def ragged_cases(max_batch_size: int, max_seq_len: int, token_budget: int,
                 max_positions: int | None = None) -> list[RaggedCase]:
    """Ragged batches Triton may merge: lengths out of order (rows must come back in request order), single-token
    texts, the max length and position limit, the max batch, and enough tokens to need several encoder chunks."""
    short, mid = min(12, max_seq_len), min(37, max_seq_len)
    mixed = tuple(min(n, max_seq_len) for n in (5, 1, 37, 12, 2, 29, 8, 21, 3, 16, 33, 1, 9))[:max_batch_size]
    cases = [
        RaggedCase("one request", (short,)),
        RaggedCase("single token", (1,)),
        RaggedCase("many lengths, request order", mixed),
        RaggedCase("max batch", tuple(1 + (i * 7) % mid for i in range(max_batch_size))),
        RaggedCase("max length", (3, max_seq_len, 1, max_seq_len - 1)[:max_batch_size]),
    ]
    if max_positions and max_positions > max_seq_len:
        cases.append(RaggedCase("position limit", (max_positions,)))
    # Texts of about the chunk width, (budget // width) to a chunk, three chunks' worth and one more, shuffled so
    # that sorting has work to do. More texts than max_batch_size may merge: the module's chunking is what is checked.
    width = min(max_seq_len, token_budget)
    per_chunk = max(1, token_budget // width)
    lengths = [max(1, width - (i * 5) % max(1, width // 4)) for i in range(3 * per_chunk + 1)]
    cases.append(RaggedCase("several chunks", tuple(lengths[1::2] + lengths[0::2])))
    return cases


def ragged_texts(case: RaggedCase, vocab_size: int, seed: int = 0) -> list[list[int]]:
    """Random token lists of the case's lengths."""
    gen = torch.Generator().manual_seed(seed + len(case.lengths) * 1009 + sum(case.lengths))
    return [_random_ids(gen, vocab_size, (length,)).tolist() for length in case.lengths]


def check_ragged(
    module,
    reference,
    cases: list[RaggedCase],
    input_names: tuple[str, ...],
    vocab_size: int,
    pad_id: int,
    input_dtype: torch.dtype,
    tolerance: Tolerance,
    device: str = "cpu",
) -> ParityReport:
    """Run the ragged ``module`` on (ids, offsets) as the backend passes them, and the eager ``reference`` on the same
    texts padded as a tokenizer pads them (``input_names``: the model's own inputs), for every case."""
    report = ParityReport(tolerance)
    for case in cases:
        texts = ragged_texts(case, vocab_size)
        ids, offsets = pack(texts, input_dtype)
        with torch.inference_mode():
            embedding = module(ids.to(device), offsets.to(device))
        features = pad_right(texts, pad_id)
        if "token_type_ids" in input_names:
            features["token_type_ids"] = torch.zeros_like(features["input_ids"])
        expected = reference.embed({k: v.to(device) for k, v in features.items()})
        chunks = len(module.chunks(torch.tensor(case.lengths)))
        report.add(f"{case.name} ({chunks} chunk{'s' if chunks > 1 else ''})", expected, embedding,
                   seq_len=max(case.lengths))
    return report


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
        expected = reference.embed({k: v.long().to(device) for k, v in inputs.items()})
        report.add(case.name, expected, embedding, seq_len=case.seq_len)
    return report
