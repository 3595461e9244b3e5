"""What a bench run reports: cells, modes, ratios between them, the targets, the table and results.json."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from ..report_json import dumps
from .modes import (COMPAT_SUFFIX, EAGER, GRPC, GRPC_RAGGED, IN_PROCESS_MODES, INFINITY, ORT_FP32, ST_ENCODE, TS_BF16,
                    TS_FP32)

Progress = Callable[[str], None]


def say(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)


@dataclass
class Parity:
    passed: bool
    max_abs_diff: float
    min_cosine: float
    tolerance: str
    rows: int


@dataclass
class Cell:
    """One mode on one workload at one batch size (in-process) or concurrency (served)."""

    mode: str
    workload: str
    batch: int  # texts per call
    concurrency: int  # calls in flight
    calls: int = 0
    seqs: int = 0
    seconds: float = 0.0
    seq_per_s: float = 0.0
    tokens_per_s: float = 0.0
    p50_ms: float = float("nan")
    p95_ms: float = float("nan")
    p99_ms: float = float("nan")
    model_gflop_per_s: float = 0.0
    fraction_of_matmul_peak: float = 0.0
    ratio_to_torchscript_fp32: float | None = None
    ratio_to_onnxruntime_fp32: float | None = None
    reference_batch: int | None = None  # the in-process batch the ratios compare with
    ratio_to_nvidia_backend: float | None = None  # compatibility-backend cells: seq/s over NVIDIA's same cell
    server_avg_batch: float | None = None  # served: requests per model execution in the timed part (batching)
    client_cpu_cores: float | None = None  # served: CPU the load generator itself used, in cores (of the same box)
    parity: Parity | None = None
    error: str | None = None


@dataclass
class ModeInfo:
    mode: str
    status: str  # "measured", "not measured: <why>", "error: <what>"
    detail: str = ""
    parity_passed: bool | None = None


@dataclass
class BenchReport:
    options: dict
    machine: dict
    model: dict
    workloads: dict
    server: str = ""
    modes: list[ModeInfo] = field(default_factory=list)
    cells: list[Cell] = field(default_factory=list)
    targets: list[dict] = field(default_factory=list)

    def mode(self, name: str) -> ModeInfo | None:
        return next((m for m in self.modes if m.mode == name), None)

    def cell(self, mode: str, workload: str, batch: int | None = None, concurrency: int | None = None):
        for c in self.cells:
            if c.mode == mode and c.workload == workload and c.error is None and \
                    (batch is None or c.batch == batch) and (concurrency is None or c.concurrency == concurrency):
                return c
        return None

    @property
    def parity_passed(self) -> bool:
        measured = [c for c in self.cells if c.error is None]
        return bool(measured) and all(c.parity is not None and c.parity.passed for c in measured)

    def to_dict(self) -> dict:
        return {"options": self.options, "machine": self.machine, "model": self.model, "workloads": self.workloads,
                "server": self.server, "modes": [asdict(m) for m in self.modes],
                "parity_passed": self.parity_passed, "targets": self.targets,
                "results": [asdict(c) for c in self.cells]}

    def table(self) -> str:
        head = ("mode", "workload", "batch", "conc", "seq/s", "tok/s", "p50 ms", "p95 ms", "p99 ms", "xTS32",
                "xORT32", "xNV", "%peak", "srv b", "cli cpu", "parity")
        rows = [head]
        for c in self.cells:
            if c.error:
                rows.append((c.mode, c.workload, str(c.batch), str(c.concurrency), "error", c.error[:60], *[""] * 10))
                continue
            ratio = lambda r: "" if r is None else f"{r:.2f}"  # noqa: E731
            par = "" if c.parity is None else ("ok" if c.parity.passed else "FAIL") + f" {c.parity.min_cosine:.6f}"
            rows.append((c.mode, c.workload, str(c.batch), str(c.concurrency), f"{c.seq_per_s:.1f}",
                         f"{c.tokens_per_s:.0f}", f"{c.p50_ms:.2f}", f"{c.p95_ms:.2f}", f"{c.p99_ms:.2f}",
                         ratio(c.ratio_to_torchscript_fp32), ratio(c.ratio_to_onnxruntime_fp32),
                         ratio(c.ratio_to_nvidia_backend), f"{100 * c.fraction_of_matmul_peak:.1f}",
                         "" if c.server_avg_batch is None else f"{c.server_avg_batch:.1f}",
                         "" if c.client_cpu_cores is None else f"{c.client_cpu_cores:.2f}", par))
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
        lines.append(f"machine: {self.machine.get('cpu', '?')}, {self.options.get('threads')} threads; fp32 matmul "
                     f"{self.machine.get('matmul_gflop_per_s', {}).get('fp32', 0):.1f} GFLOP/s (the %peak base); "
                     f"matrix extensions: {', '.join(self.machine.get('matrix_flags', [])) or 'none found'}")
        if self.server:
            lines.append(f"server: {self.server}")
            lines.append("srv b: requests per model execution on the server (what the dynamic batcher merged); "
                         "cli cpu: cores the load generator (this process) used meanwhile; "
                         "served ratios compare with the in-process batch <= the concurrency; "
                         f"xNV: a *{COMPAT_SUFFIX} cell's seq/s over the same cell on NVIDIA's backend")
        for m in self.modes:
            if m.status != "measured" or m.detail:
                lines.append(f"{m.mode}: {m.status}{' (' + m.detail + ')' if m.detail else ''}")
        for t in self.targets:
            value = "n/a" if t["value"] is None else f"{t['value']:.3g}"
            verdict = "not measured" if t["met"] is None else ("met" if t["met"] else "NOT met")
            lines.append(f"target: {t['name']}: {value} (goal {t['goal']}) -> {verdict}")
        lines.append("parity of every measured cell against sentence-transformers: "
                     + ("PASS" if self.parity_passed else "FAIL (see the parity column)"))
        return "\n".join(lines)

    def write(self, out_dir: Path) -> list[Path]:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        results = out_dir / "results.json"
        results.write_text(dumps(self.to_dict()) + "\n", encoding="utf-8")
        from .plot import plot

        return [results, plot(self, out_dir / "bench.png")]


def cell_line(k: int, total: int, c: Cell) -> str:
    where = f"batch {c.batch}" if c.mode in IN_PROCESS_MODES else f"concurrency {c.concurrency}"
    if c.error:
        return f"[{k}/{total}] {c.mode} {c.workload} {where}: error {c.error}"
    ok = "ok" if c.parity and c.parity.passed else "PARITY FAIL"
    return (f"[{k}/{total}] {c.mode} {c.workload} {where}: {c.seq_per_s:.1f} seq/s, p95 {c.p95_ms:.1f} ms, "
            f"parity {ok} (min cos {c.parity.min_cosine:.6f})")


def fill_ratios(report: BenchReport) -> None:
    for c in report.cells:
        if c.error:
            continue
        batches = sorted({x.batch for x in report.cells if x.mode == TS_FP32 and x.workload == c.workload})
        if c.mode in IN_PROCESS_MODES:
            ref_batch = c.batch
        else:  # served: compare with the largest in-process batch not above the concurrency
            fitting = [b for b in batches if b <= c.concurrency]
            ref_batch = max(fitting) if fitting else (min(batches) if batches else None)
        c.reference_batch = ref_batch
        ts, ort = report.cell(TS_FP32, c.workload, ref_batch), report.cell(ORT_FP32, c.workload, ref_batch)
        c.ratio_to_torchscript_fp32 = c.seq_per_s / ts.seq_per_s if ts and ts.seq_per_s else None
        c.ratio_to_onnxruntime_fp32 = c.seq_per_s / ort.seq_per_s if ort and ort.seq_per_s else None
        if c.mode.endswith(COMPAT_SUFFIX):
            nv = report.cell(c.mode[:-len(COMPAT_SUFFIX)], c.workload, concurrency=c.concurrency)
            c.ratio_to_nvidia_backend = c.seq_per_s / nv.seq_per_s if nv and nv.seq_per_s else None


def targets_of(report: BenchReport) -> list[dict]:
    def target(name, goal, value, met):
        return {"name": name, "goal": goal, "value": value, "met": None if value is None else bool(met(value))}

    out = []
    grpc16, ts16 = report.cell(GRPC, "short", concurrency=16), report.cell(TS_FP32, "short", 16)
    v = grpc16.seq_per_s / ts16.seq_per_s if grpc16 and ts16 else None
    out.append(target("Triton gRPC c16 single sentences / in-process TorchScript batch 16 (seq/s)", ">= 0.95", v,
                      lambda x: x >= 0.95))
    grpc1, ts1 = report.cell(GRPC, "short", concurrency=1), report.cell(TS_FP32, "short", 1)
    v = grpc1.p50_ms - ts1.p50_ms if grpc1 and ts1 else None
    # issue 18: the server's own cost of one request (queue, protocol, client), not the model's
    out.append(target("single-request p50: Triton gRPC c1 minus in-process TorchScript batch 1, short text (ms)",
                      "<= 1 ms", v, lambda x: x <= 1.0))
    ts_mixed, eager_mixed = report.cell(TS_FP32, "mixed", 16), report.cell(EAGER, "mixed", 16)
    v = ts_mixed.seq_per_s / eager_mixed.seq_per_s if ts_mixed and eager_mixed else None
    out.append(target("TorchScript fp32 / eager on the mixed corpus, batch 16 (seq/s)", ">= 1.1", v,
                      lambda x: x >= 1.1))
    bf16, ort16 = report.cell(TS_BF16, "short", 16), report.cell(ORT_FP32, "short", 16)
    v = bf16.seq_per_s / ort16.seq_per_s if bf16 and ort16 else None
    out.append(target("TorchScript bf16 / ONNX Runtime fp32, batch 16 single sentences (seq/s)", ">= 1.5", v,
                      lambda x: x >= 1.5))
    pairs = [(report.cell(GRPC, "short", concurrency=c), report.cell(INFINITY, "short", concurrency=c))
             for c in report.options.get("concurrencies", ())]
    ratios = [grpc.seq_per_s / inf.seq_per_s for grpc, inf in pairs if grpc and inf and inf.seq_per_s]
    out.append(target("Triton served throughput ahead of infinity-emb at every concurrency: min over concurrencies "
                      "of Triton gRPC / infinity-emb, single sentences (seq/s)", "> 1",
                      min(ratios) if ratios else None, lambda x: x > 1))
    # issue 11: the ragged export on real mixed-length text, one text per request
    ragged64, bucketed64 = report.cell(GRPC_RAGGED, "mixed", concurrency=64), report.cell(GRPC, "mixed", concurrency=64)
    v = ragged64.seq_per_s / bucketed64.seq_per_s if ragged64 and bucketed64 else None
    out.append(target("ragged export / bucketed export, gRPC at 64 clients, mixed-length text (seq/s)", ">= 1.5", v,
                      lambda x: x >= 1.5))
    encodes = [c for c in report.cells if c.mode == ST_ENCODE and c.workload == "mixed" and c.error is None]
    best = max(encodes, key=lambda c: c.seq_per_s) if encodes else None
    v = ragged64.seq_per_s / best.seq_per_s if ragged64 and best else None
    out.append(target("ragged export gRPC at 64 clients / in-process SentenceTransformer.encode() (its best batch "
                      "size), mixed-length text (seq/s)", ">= 0.9", v, lambda x: x >= 0.9))
    pairs = [(report.cell(GRPC_RAGGED, "mixed", concurrency=c), report.cell(INFINITY, "mixed", concurrency=c))
             for c in report.options.get("concurrencies", ())]
    ratios = [r.seq_per_s / inf.seq_per_s for r, inf in pairs if r and inf and inf.seq_per_s]
    out.append(target("ragged Triton ahead of infinity-emb at every concurrency on mixed-length text: min over "
                      "concurrencies of ragged gRPC / infinity-emb (seq/s)", "> 1", min(ratios) if ratios else None,
                      lambda x: x > 1))
    return out
