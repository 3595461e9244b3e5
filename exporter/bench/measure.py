"""Measuring one in-process cell, and what every cell reports: parity against the reference, latency percentiles."""
from __future__ import annotations

import itertools
import time

import numpy as np
import torch

from ..checks.parity import Tolerance, compare
from .machine import FlopModel
from .options import BenchOptions
from .report import Cell, Parity
from .workloads import Chunk


def percentiles(latencies: list[float]) -> tuple[float, float, float]:
    if not latencies:
        return float("nan"), float("nan"), float("nan")
    p = np.percentile(np.asarray(latencies) * 1e3, [50, 95, 99])
    return float(p[0]), float(p[1]), float(p[2])


def parity_of(expected: np.ndarray, got: np.ndarray, tolerance: Tolerance) -> Parity:
    max_abs, min_cos = compare(expected, got)
    return Parity(tolerance.accepts(max_abs, min_cos), max_abs, min_cos, tolerance.describe(), int(len(expected)))


def measure_in_process(fn, chunks: list[Chunk], expected: np.ndarray, tolerance: Tolerance, flop: FlopModel,
                        peak: float, options: BenchOptions, cell: Cell) -> Cell:
    with torch.inference_mode():
        got = torch.cat([fn(*c.tensors).float() for c in chunks]).numpy()  # parity pass, also the warm-up
        cell.parity = parity_of(expected, got, tolerance)
        latencies, seqs, tokens, flops = [], 0, 0, 0.0
        limit = options.call_limit(len(chunks))
        start = time.perf_counter()
        for k in itertools.count():
            # time is looked at only between whole passes over the chunks (BenchOptions.call_limit, pass_end)
            if k >= limit or (k > 0 and k % len(chunks) == 0 and time.perf_counter() - start >= options.max_seconds):
                break
            c = chunks[k % len(chunks)]
            t0 = time.perf_counter()
            fn(*c.tensors)
            latencies.append(time.perf_counter() - t0)
            seqs, tokens, flops = seqs + c.rows, tokens + c.real_tokens, flops + flop.flops(c.rows, c.padded_len)
        elapsed = time.perf_counter() - start
    cell.calls, cell.seqs, cell.seconds = len(latencies), seqs, elapsed
    cell.seq_per_s, cell.tokens_per_s = seqs / elapsed, tokens / elapsed
    cell.p50_ms, cell.p95_ms, cell.p99_ms = percentiles(latencies)
    cell.model_gflop_per_s = flops / elapsed / 1e9
    cell.fraction_of_matmul_peak = cell.model_gflop_per_s / peak if peak else 0.0
    return cell


def measure_encode(reference, texts: list[str], lengths: list[int], batch: int, expected: np.ndarray,
                   tolerance: Tolerance, flop: FlopModel, peak: float, options: BenchOptions, cell: Cell) -> Cell:
    """``reference.encode(texts, batch_size=batch)`` per timed call: the whole workload, sorted by length inside
    encode() and run in batches of ``batch`` (``lengths``: each text's real token count, for tokens/s and FLOPs)."""
    got = reference.encode(texts, batch_size=batch)
    cell.parity = parity_of(expected, np.asarray(got, dtype=np.float32), tolerance)  # also the warm-up
    ordered = sorted(lengths, reverse=True)  # as encode() orders them: each batch pads to its first text
    call_flops = sum(flop.flops(len(ordered[i:i + batch]), ordered[i]) for i in range(0, len(ordered), batch))
    latencies = []
    start = time.perf_counter()
    for k in itertools.count():
        if k >= options.max_calls or (k > 0 and time.perf_counter() - start >= options.max_seconds):
            break
        t0 = time.perf_counter()
        reference.encode(texts, batch_size=batch)
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - start
    cell.calls, cell.seqs, cell.seconds = len(latencies), len(latencies) * len(texts), elapsed
    cell.seq_per_s, cell.tokens_per_s = cell.seqs / elapsed, len(latencies) * sum(lengths) / elapsed
    cell.p50_ms, cell.p95_ms, cell.p99_ms = percentiles(latencies)
    cell.model_gflop_per_s = len(latencies) * call_flops / elapsed / 1e9
    cell.fraction_of_matmul_peak = cell.model_gflop_per_s / peak if peak else 0.0
    return cell
