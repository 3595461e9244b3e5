"""The resident memory of a server's process group, sampled while a load runs: the soak's memory watch.

Processes are found by process group id (tritonserver and, with the compatibility backend, its Python stubs share
the server's group), never by name. The figures are plain arithmetic on the samples.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .process import processes


def group_rss_kb(pgid: int, proc: Path = Path("/proc")) -> tuple[int, int]:
    """(summed VmRSS in kB, processes counted) of every process whose process group is ``pgid``."""
    total = count = 0
    for member in processes(proc):
        if member.pgrp != pgid:
            continue
        try:
            for line in (proc / str(member.pid) / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):  # kernel threads have none
                    total += int(line.split()[1])
                    count += 1
                    break
        except (OSError, ValueError):  # gone meanwhile
            continue
    return total, count


@dataclass(frozen=True)
class MemorySample:
    seconds: float  # since the load began; the first sample is taken just before it
    answered: int  # requests answered (ok or not) by then
    rss_kb: int
    processes: int


@dataclass
class MemoryReport:
    """RSS samples of the server's process group and what they say. The figures are plain arithmetic on the samples:
    start = the first, after warm-up = the first taken once ``warmup_requests`` were answered, end = the last."""

    sampled: bool
    note: str = ""  # why not sampled
    pgid: int | None = None
    interval_s: float = 0.5
    warmup_requests: int = 0
    limit_pct: float = 5.0
    samples: list[MemorySample] = field(default_factory=list)

    def _mb(self, sample: MemorySample | None) -> float | None:
        return None if sample is None else sample.rss_kb / 1024

    @property
    def _after_warmup(self) -> MemorySample | None:
        return next((s for s in self.samples if s.answered >= self.warmup_requests), None)

    @property
    def start_mb(self) -> float | None:
        return self._mb(self.samples[0] if self.samples else None)

    @property
    def after_warmup_mb(self) -> float | None:
        return self._mb(self._after_warmup)

    @property
    def peak_mb(self) -> float | None:
        return self._mb(max(self.samples, key=lambda s: s.rss_kb) if self.samples else None)

    @property
    def end_mb(self) -> float | None:
        return self._mb(self.samples[-1] if self.samples else None)

    @property
    def growth_pct(self) -> float | None:
        """Growth from after warm-up to the end, in % of the after-warm-up RSS."""
        base, end = self.after_warmup_mb, self.end_mb
        return None if not base or end is None else 100.0 * (end - base) / base

    @property
    def passed(self) -> bool | None:
        """None when not sampled; False when the run never got past warm-up (nothing to judge)."""
        if not self.sampled:
            return None
        growth = self.growth_pct
        return growth is not None and growth < self.limit_pct

    def to_dict(self) -> dict:
        return {"sampled": self.sampled, "note": self.note, "pgid": self.pgid, "interval_s": self.interval_s,
                "warmup_requests": self.warmup_requests, "limit_pct": self.limit_pct, "start_mb": self.start_mb,
                "after_warmup_mb": self.after_warmup_mb, "peak_mb": self.peak_mb, "end_mb": self.end_mb,
                "growth_pct": self.growth_pct, "passed": self.passed,
                "samples": [[round(s.seconds, 2), s.answered, s.rss_kb, s.processes] for s in self.samples],
                "samples_columns": ["seconds", "answered", "rss_kb", "processes"]}


class MemorySampler:
    """Samples :func:`group_rss_kb` every ``interval`` s in a thread; :meth:`wake` takes one at once (at warm-up)."""

    def __init__(self, report: MemoryReport, answered: Callable[[], int]):
        self.report, self._answered = report, answered
        self._stop, self._wake = threading.Event(), threading.Event()
        self._origin = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="soak-memory", daemon=True)

    def sample(self) -> None:
        rss, procs = group_rss_kb(self.report.pgid)
        if procs:  # an empty group (server gone) is no measurement
            self.report.samples.append(MemorySample(time.monotonic() - self._origin, self._answered(), rss, procs))

    def start(self, origin: float) -> "MemorySampler":
        self._origin = origin
        self.sample()
        self._thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.report.interval_s)
            self._wake.clear()
            if not self._stop.is_set():
                self.sample()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join()
        self.sample()  # the end figure: after the load
