"""The machine a bench run measures on: its CPU, its own fp32/bf16 matmul limit, and a model's FLOPs."""
from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class FlopModel:
    """Forward FLOPs of a BERT-like encoder: 2 x (non-embedding parameters) per token + attention scores."""

    matmul_params: int
    layers: int
    hidden: int

    def flops(self, rows: int, padded_len: int) -> float:
        return 2.0 * self.matmul_params * rows * padded_len + 4.0 * self.layers * rows * padded_len ** 2 * self.hidden

    @classmethod
    def of(cls, encoder: torch.nn.Module) -> "FlopModel":
        params = sum(p.numel() for n, p in encoder.named_parameters() if "embeddings" not in n)
        cfg = encoder.config
        return cls(int(params), int(getattr(cfg, "num_hidden_layers", 0)), int(getattr(cfg, "hidden_size", 0)))


# GEMM shapes whose best rate is the %peak base: square ones and a BERT-base FFN. One 1024^3 product alone read
# 134 GFLOP/s on a processor whose large fp32 GEMMs run at ~437, and served cells then showed over 100 % of "peak".
PEAK_SHAPES = ((1024, 1024, 1024), (2048, 768, 3072), (2048, 2048, 2048))


def matmul_gflops(threads: int, dtype: torch.dtype = torch.float32, seconds: float = 1.0,
                  shapes: tuple[tuple[int, int, int], ...] = PEAK_SHAPES, rounds: int = 3) -> float:
    """The best GFLOP/s of plain matmuls of ``shapes`` on ``threads`` threads, best of ``rounds`` timed rounds
    (``seconds`` in all): what this machine can do at best, the base of bench's %peak."""
    torch.set_num_threads(threads)
    best, per_round = 0.0, seconds / (len(shapes) * rounds)
    with torch.inference_mode():
        for m, k, n in shapes:
            a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
            a @ b
            for _ in range(rounds):
                calls, start = 0, time.perf_counter()
                while calls < 1 or time.perf_counter() - start < per_round:
                    a @ b
                    calls += 1
                best = max(best, 2.0 * m * k * n * calls / (time.perf_counter() - start) / 1e9)
    return best


MATRIX_FLAGS = frozenset({"amx_int8", "amx_bf16", "amx_tile", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512f",
                          "avx2"})


def cpu_info() -> tuple[str, set[str]]:
    """The CPU's model name and flags (figures differ between processors of one machine kind: report which)."""
    cpu, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags.update(line.split(":", 1)[1].split())
    except OSError:
        pass
    return cpu or platform.processor() or platform.machine(), flags


def machine_info(threads: int, quick: bool) -> dict:
    cpu, flags = cpu_info()
    seconds = 0.2 if quick else 1.0
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": threads,
            "bf16_flags": sorted(flags & {"avx512_bf16", "amx_bf16"}),
            # the matrix extensions that decide whether trace --precision int8 or bf16 pays on this processor
            "matrix_flags": sorted(flags & MATRIX_FLAGS),
            "matmul_gflop_per_s": {"fp32": matmul_gflops(threads, torch.float32, seconds=seconds),
                                   "bf16": matmul_gflops(threads, torch.bfloat16, seconds=seconds)},
            "torch": torch.__version__, "python": platform.python_version()}
