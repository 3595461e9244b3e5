"""What a bench run measures and how long: :class:`BenchOptions`."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import TeiExportError
from ..tokens import DEFAULT_BUCKETS
from .modes import WORKLOADS


@dataclass(frozen=True)
class BenchOptions:
    repository: Path
    model: str
    threads: int = os.cpu_count() or 1
    batches: tuple[int, ...] = (1, 16, 64)
    concurrencies: tuple[int, ...] = (1, 4, 16, 64)
    workloads: tuple[str, ...] = WORKLOADS
    short_texts: int = 64
    mixed_texts: int = 48  # docstring sentences; the corpus's edge cases come on top
    long_texts: int = 8
    # Timed calls (in-process) or requests (served) per cell, and timed seconds, at most; both are rounded to whole
    # passes over the workload (see pass_end), so every mode of a row is timed on the same texts.
    max_calls: int = 400
    max_seconds: float = 2.5
    buckets: tuple[int, ...] = DEFAULT_BUCKETS  # served, concurrency > 1: requests padded to these lengths
    bf16: bool = True
    pt2: bool = True
    onnx: bool = True
    server: bool = True
    infinity: str | None = None  # infinity_emb executable; None: $TEI_EXPORT_INFINITY or PATH; "": leave it out
    # LibTorch backends to serve with, side by side ("nvidia", "compat"); empty: NVIDIA's and the compatibility
    # backend when NVIDIA's is available, else the compatibility backend alone
    backends: tuple[str, ...] = ()
    quick: bool = False
    command: str = ""

    @classmethod
    def quick_options(cls, repository: Path, model: str, **overrides) -> "BenchOptions":
        """Tiny counts for CI: the same sweep and the same results.json shape, a few calls per cell."""
        values = dict(short_texts=4, mixed_texts=4, long_texts=2, max_calls=6, max_seconds=0.3, quick=True)
        values.update(overrides)
        return cls(Path(repository), model, **values)

    def call_limit(self, pass_size: int) -> int:
        """max_calls rounded down to whole passes over ``pass_size`` calls, and never under one pass."""
        return max(pass_size, self.max_calls // pass_size * pass_size)

    def validate(self) -> None:
        unknown = set(self.workloads) - set(WORKLOADS)
        if unknown or not self.workloads:
            raise TeiExportError(f"unknown workload(s) {', '.join(sorted(unknown)) or '(none)'}",
                                 fix=f"use some of {', '.join(WORKLOADS)}", where="--workload")
        if set(self.backends) - {"nvidia", "compat"}:
            raise TeiExportError(f"unknown backend(s) {', '.join(sorted(set(self.backends) - {'nvidia', 'compat'}))}",
                                 fix="use nvidia and/or compat", where="--backend")
        if self.threads < 1 or min(self.batches) < 1 or min(self.concurrencies) < 1:
            raise TeiExportError("threads, batch sizes and concurrencies must be at least 1",
                                 fix="pass positive numbers", where="bench options")


def pass_end(k: int, pass_size: int) -> int:
    """The first call index at or after ``k`` that starts a new pass over the workload: where a cell whose time is up
    at call ``k`` stops. A cell cut mid-pass times a prefix of the workload, and on mixed-length text the prefixes of
    two modes differ (one reaches a 512-token text the other never sends), so their rows would not compare."""
    return -(-k // pass_size) * pass_size
