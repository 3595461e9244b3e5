"""Parity between an exported model and the eager reference: the figures, the bounds, the table.

Each case records max |diff| and min cosine per row (as NVIDIA's model navigator records max abs/rel diff per
output); a report passes only when every case is within the tolerance of the export's precision.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch


@dataclass(frozen=True)
class Tolerance:
    max_abs: float | None  # None: reported, not bounded (half precision)
    min_cosine: float

    def accepts(self, max_abs: float, min_cosine: float) -> bool:
        return min_cosine >= self.min_cosine and (self.max_abs is None or max_abs <= self.max_abs)

    def describe(self) -> str:
        bound = "" if self.max_abs is None else f"max|diff| <= {self.max_abs:g} and "
        return f"{bound}cosine >= {self.min_cosine:g} per row"


TOLERANCES = {
    "float32": Tolerance(max_abs=1e-5, min_cosine=0.99999),
    "bfloat16": Tolerance(max_abs=None, min_cosine=0.9999),
    "float16": Tolerance(max_abs=None, min_cosine=0.999),
    # int8 (trace --precision int8) against fp32: its default quality gate's cosine; verify uses the gate the
    # export recorded (exporter.export.precision.served_tolerance)
    "int8": Tolerance(max_abs=None, min_cosine=0.99),
}


# Half precision computed on a GPU (fp16 or bf16 tensor cores): the bound the GPU export promises.
GPU_HALF = Tolerance(max_abs=None, min_cosine=0.999)


def tolerance_for(dtype: str, device: str = "cpu") -> Tolerance:
    """The parity bound of an export computed in ``dtype`` on ``device``, against the fp32 eager reference."""
    if dtype != "float32" and device.startswith("cuda"):
        return GPU_HALF
    return TOLERANCES[dtype]


@dataclass(frozen=True)
class CaseResult:
    name: str
    batch: int
    seq_len: int
    max_abs_diff: float
    min_cosine: float
    passed: bool


@dataclass
class ParityReport:
    tolerance: Tolerance
    cases: list[CaseResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.cases) and all(c.passed for c in self.cases)

    @property
    def max_abs_diff(self) -> float:
        return max((c.max_abs_diff for c in self.cases), default=float("nan"))

    @property
    def min_cosine(self) -> float:
        return min((c.min_cosine for c in self.cases), default=float("nan"))

    def add(self, name: str, expected, actual, seq_len: int = -1) -> CaseResult:
        max_abs, min_cos = compare(expected, actual)
        result = CaseResult(
            name=name,
            batch=len(expected),
            seq_len=seq_len,
            max_abs_diff=max_abs,
            min_cosine=min_cos,
            passed=self.tolerance.accepts(max_abs, min_cos),
        )
        self.cases.append(result)
        return result

    def to_dict(self) -> dict:
        return {
            "passed": self.passed,
            "tolerance": asdict(self.tolerance),
            "max_abs_diff": self.max_abs_diff,
            "min_cosine": self.min_cosine,
            "cases": [asdict(c) for c in self.cases],
        }

    def table(self) -> str:
        rows = [("case", "batch", "seq", "max|diff|", "min cos", "ok")]
        for c in self.cases:
            seq = "" if c.seq_len < 0 else str(c.seq_len)
            rows.append((c.name, str(c.batch), seq, f"{c.max_abs_diff:.2e}", f"{c.min_cosine:.7f}",
                         "ok" if c.passed else "FAIL"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
        lines.append(f"tolerance: {self.tolerance.describe()}")
        return "\n".join(lines)


def _as_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def compare(expected, actual) -> tuple[float, float]:
    """(max |diff|, min row cosine) of two [rows, ...] arrays; shapes must match."""
    exp, act = _as_numpy(expected), _as_numpy(actual)
    if exp.shape != act.shape:
        raise ValueError(f"shape mismatch: expected {exp.shape}, got {act.shape}")
    if exp.size == 0:
        return 0.0, 1.0
    exp64 = exp.reshape(exp.shape[0], -1).astype(np.float64)
    act64 = act.reshape(act.shape[0], -1).astype(np.float64)
    max_abs = float(np.max(np.abs(exp64 - act64)))
    norms = np.linalg.norm(exp64, axis=1) * np.linalg.norm(act64, axis=1)
    dots = np.sum(exp64 * act64, axis=1)
    # Two all-zero rows are identical; cosine is undefined there, so count them as 1.
    cos = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), np.where(max_abs == 0, 1.0, 0.0))
    if not np.all(np.isfinite(act64)):
        return float("inf"), float("-inf")
    return max_abs, float(np.min(cos))
