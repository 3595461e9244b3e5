"""`tei-export tune`: a bounded sweep of serving settings against a real tritonserver, one fresh server per trial.

Each trial serves a copy of the model whose config.pbtxt is rewritten (INTRA_OP_THREAD_COUNT,
INTER_OP_THREAD_COUNT, instance count, dynamic_batching max_queue_delay_microseconds) through Triton's own
``ModelConfig`` protobuf, checks the answers against sentence-transformers, and measures seq/s and p95 under a
fixed load (single sentences, one text per request, over gRPC; a graph text model ``<name>_text`` is sent the
texts as UTF-8 strings and compared with encode() told its prompt). A fresh server per trial matters: NVIDIA's C++
LibTorch backend sets the two thread counts once per process (the first model loaded wins), so changing them in a
running server would measure nothing. (The compatibility backend applies them per instance process instead, so
``instances x INTRA_OP_THREAD_COUNT`` threads share the cores there.)

The default grid splits the cores: every (INTRA_OP_THREAD_COUNT, instances) pair whose product is the core count.
Fewer threads leave cores idle; more make libgomp cut its spin-waiting (see :mod:`exporter.triton.openmp`), so on
this project's 2-core machine (2, 1) and (1, 2) are the only splits worth a trial.

Nothing is written to the model's own config.pbtxt unless asked (``write=True``), and then the old file is kept
as ``config.pbtxt.bak-<time>`` beside it.
"""
from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import TeiExportError, first_line

Progress = Callable[[str], None]
OBJECTIVES = ("throughput", "p95")


@dataclass(frozen=True)
class Trial:
    intra_op_threads: int
    inter_op_threads: int
    instances: int
    max_queue_delay_us: int

    @property
    def label(self) -> str:
        return (f"intra {self.intra_op_threads}, inter {self.inter_op_threads or 'unset'}, instances {self.instances}, "
                f"delay {self.max_queue_delay_us} us")


@dataclass
class TrialResult:
    trial: Trial
    seq_per_s: float = 0.0
    p50_ms: float = float("nan")
    p95_ms: float = float("nan")
    requests: int = 0
    parity_passed: bool = False
    min_cosine: float = float("nan")
    error: str | None = None


@dataclass(frozen=True)
class TuneOptions:
    repository: Path
    model: str
    intra_op_threads: tuple[int, ...] = ()  # (): the core splits (see thread_splits); with instances given: cores // n
    inter_op_threads: tuple[int, ...] = (0,)  # 0: no INTER_OP_THREAD_COUNT (see exporter.triton.hazards)
    instances: tuple[int, ...] = ()  # (): as intra_op_threads
    max_queue_delay_us: tuple[int, ...] = (0, 100, 2000)
    concurrency: int = 16
    texts: int = 32
    max_calls: int = 300
    max_seconds: float = 3.0
    max_trials: int = 12
    objective: str = "throughput"
    p95_budget_ms: float | None = None  # only trials with p95 under this qualify
    write: bool = False
    backend: str | None = None  # auto, nvidia or compat (exporter.triton.backends)

    def thread_pairs(self, cores: int | None = None) -> list[tuple[int, int]]:
        """(intra-op threads, instances) pairs to try: the user's grid, else the splits of ``cores``."""
        cores = cores or os.cpu_count() or 1
        if self.intra_op_threads and self.instances:
            return list(itertools.product(self.intra_op_threads, self.instances))
        if self.intra_op_threads:
            return [(t, max(1, cores // t)) for t in self.intra_op_threads]
        if self.instances:
            return [(max(1, cores // n), n) for n in self.instances]
        return thread_splits(cores)

    def trials(self, cores: int | None = None) -> list[Trial]:
        grid = itertools.product(self.thread_pairs(cores), self.inter_op_threads, self.max_queue_delay_us)
        return [Trial(intra, inter, n, delay) for (intra, n), inter, delay in grid][: self.max_trials]

    def validate(self) -> None:
        if self.objective not in OBJECTIVES:
            raise TeiExportError(f"unknown objective '{self.objective}'", fix=f"use one of {', '.join(OBJECTIVES)}",
                                 where="--objective")
        values = (*self.intra_op_threads, *self.instances, self.concurrency, self.max_trials)
        if min(values) < 1 or min(self.max_queue_delay_us) < 0 or min(self.inter_op_threads) < 0:
            raise TeiExportError("intra-op threads, instances, concurrency and max trials must be >= 1, inter-op "
                                 "threads and delays >= 0 (0 inter-op threads: the parameter is left out)",
                                 fix="pass positive numbers", where="tune options")


def thread_splits(cores: int) -> list[tuple[int, int]]:
    """Every (threads, instances) with threads x instances == ``cores``, most threads first."""
    return [(cores // n, n) for n in range(1, cores + 1) if cores % n == 0]


@dataclass
class TuneReport:
    model: str
    objective: str
    p95_budget_ms: float | None
    results: list[TrialResult] = field(default_factory=list)
    written: str | None = None
    backup: str | None = None
    server: str = ""  # the server and backend the trials ran on

    @property
    def best(self) -> TrialResult | None:
        ok = [r for r in self.results if r.error is None and r.parity_passed]
        if self.p95_budget_ms is not None:
            ok = [r for r in ok if r.p95_ms <= self.p95_budget_ms]
        if not ok:
            return None
        if self.objective == "p95":
            return min(ok, key=lambda r: r.p95_ms)
        return max(ok, key=lambda r: r.seq_per_s)

    def to_dict(self) -> dict:
        best = self.best
        return {"model": self.model, "server": self.server, "objective": self.objective,
                "p95_budget_ms": self.p95_budget_ms,
                "best": None if best is None else asdict(best), "written": self.written, "backup": self.backup,
                "results": [asdict(r) for r in self.results]}

    def table(self) -> str:
        rows = [("intra", "inter", "instances", "delay us", "seq/s", "p50 ms", "p95 ms", "requests", "parity")]
        for r in self.results:
            t = r.trial
            head = (str(t.intra_op_threads), str(t.inter_op_threads or "-"), str(t.instances),
                    str(t.max_queue_delay_us))
            if r.error:
                rows.append((*head, "error", r.error[:60], "", "", ""))
            else:
                rows.append((*head, f"{r.seq_per_s:.1f}", f"{r.p50_ms:.2f}", f"{r.p95_ms:.2f}", str(r.requests),
                             ("ok" if r.parity_passed else "FAIL") + f" {r.min_cosine:.6f}"))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = [f"server: {self.server}"] if self.server else []
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
        goal = "max seq/s" if self.objective == "throughput" else "min p95"
        if self.p95_budget_ms is not None:
            goal += f" with p95 <= {self.p95_budget_ms:g} ms"
        best = self.best
        lines.append(f"best ({goal}): " + ("none qualifies" if best is None else best.trial.label))
        if self.written:
            lines.append(f"wrote {self.written} (previous config kept as {self.backup})")
        return "\n".join(lines)


def rewrite_config(text: str, trial: Trial, name: str | None = None) -> str:
    """``text`` (a config.pbtxt) with the trial's settings, through the typed config and its template (the source
    named in its header is kept)."""
    from dataclasses import replace

    from .export.triton_config import DynamicBatching, InstanceGroup, parse_typed

    config, source = parse_typed(text)
    parameters = [(k, v) for k, v in config.parameters if k not in ("INTRA_OP_THREAD_COUNT", "INTER_OP_THREAD_COUNT")]
    threads = [("INTRA_OP_THREAD_COUNT", str(trial.intra_op_threads))]
    if trial.inter_op_threads:
        threads.append(("INTER_OP_THREAD_COUNT", str(trial.inter_op_threads)))
    groups = config.instance_group or (InstanceGroup(),)
    # a graph text model (a TYPE_STRING input) keeps its template's note on what it is
    template = "graph_text.pbtxt.j2" if any(t.data_type == "TYPE_STRING" for t in config.inputs) else \
        "config.pbtxt.j2"
    config = replace(
        config, name=name or config.name, parameters=tuple(threads + parameters),
        instance_group=tuple(replace(g, count=trial.instances) for g in groups),
        dynamic_batching=replace(config.dynamic_batching or DynamicBatching(),
                                 max_queue_delay_microseconds=trial.max_queue_delay_us))
    return config.render(source=source, template=template)


def _trial_repository(model_dir: Path, trial: Trial, root: Path) -> Path:
    """A repository under ``root`` holding the model with the trial's config; version folders are linked."""
    repo = root / "repo"
    if repo.exists():
        shutil.rmtree(repo)
    dest = repo / model_dir.name
    dest.mkdir(parents=True)
    for child in model_dir.iterdir():
        if child.is_dir() and child.name.isdigit():
            (dest / child.name).symlink_to(child.resolve(), target_is_directory=True)
    (dest / "config.pbtxt").write_text(rewrite_config((model_dir / "config.pbtxt").read_text(), trial), encoding="utf-8")
    return repo


def run_tune(options: TuneOptions, progress: Progress | None = None) -> TuneReport:
    from .bench import BenchOptions
    from .bench.load import send_all, timed_load
    from .bench.measure import parity_of, percentiles
    from .bench.workloads import build_workloads
    from .checks.parity import tolerance_for
    from .export.reader import resolve_name
    from .tokens import TextRequestBuilder, request_builder
    from .triton.server import TritonServer

    options.validate()
    say = progress or (lambda _m: None)
    target, text = resolve_name(Path(options.repository), options.model)
    meta = target.metadata
    model_dir = target.text_dir if text else target.model_dir
    if text and not target.graph_text:
        raise TeiExportError(f"{options.model} is a Python text model (--tokenizer python): its speed is the token "
                             f"model's settings plus the Python tokenizer's, which a sweep of one model's config "
                             f"cannot set", fix=f"tune the token model ({target.name}), or export the text model "
                                                f"with --tokenizer graph and tune that", where=str(model_dir))
    if meta.variant == "pt2":
        raise TeiExportError(f"{options.model} is a {meta.format} export, served with max_batch_size 0 and no dynamic "
                             "batching, so there is no queue delay to tune",
                             fix="tune a TorchScript export; set a pt2 model's instance count and threads by hand",
                             where=str(target.model_dir))
    tokenizer = target.tokenizer()
    texts = build_workloads(tokenizer, meta.max_seq_len,
                            BenchOptions(Path(options.repository), options.model, workloads=("short",),
                                         short_texts=options.texts))["short"]
    say(f"eager sentence-transformers on {len(texts)} sentences")
    reference = target.reference()
    expected = (target.text_rows(reference, texts) if text else reference.encode(texts)).astype(np.float64)
    tolerance = tolerance_for(meta.dtype, meta.device)
    report = TuneReport(options.model, options.objective, options.p95_budget_ms)
    load = BenchOptions(Path(options.repository), options.model, max_calls=options.max_calls,
                        max_seconds=options.max_seconds)
    trials = options.trials()
    with tempfile.TemporaryDirectory(prefix="tei-export-tune-") as tmp:
        for k, trial in enumerate(trials, 1):
            result = TrialResult(trial)
            say(f"[{k}/{len(trials)}] {trial.label}: starting a fresh tritonserver")
            try:
                repo = _trial_repository(model_dir, trial, Path(tmp))
                with TritonServer(repo, model_control_mode="explicit", load_models=[options.model],
                                  backend=options.backend) as server:
                    from .triton_client import TritonClient

                    report.server = server.describe()
                    with TritonClient(server.grpc_url, "grpc") as admin:
                        served = admin.model(options.model)
                    output = served.outputs[0].name
                    # every trial is measured under load, so token requests are padded as concurrent ones are; a
                    # text model takes the strings
                    build = TextRequestBuilder(served.inputs[0].name) if text else \
                        request_builder(meta, tokenizer, served, concurrent=True)
                    requests = [build([t]) for t in texts]
                    got = send_all(server.grpc_url, "grpc", options.model, requests, output, options.concurrency)
                    parity = parity_of(expected, got, tolerance)
                    result.parity_passed, result.min_cosine = parity.passed, parity.min_cosine
                    latencies, done, elapsed, errors = timed_load(server.grpc_url, "grpc", options.model, requests,
                                                                  None, output, options.concurrency, load)
                if errors:
                    result.error = errors[0]
                else:
                    result.requests, result.seq_per_s = len(done), len(done) / elapsed
                    result.p50_ms, result.p95_ms, _ = percentiles(latencies)
            except TeiExportError as err:
                result.error = first_line(err, 200)
            report.results.append(result)
            say(f"[{k}/{len(trials)}] {trial.label}: " + (f"error {result.error}" if result.error else
                f"{result.seq_per_s:.1f} seq/s, p95 {result.p95_ms:.1f} ms, parity "
                f"{'ok' if result.parity_passed else 'FAIL'}"))
    best = report.best
    if options.write and best is not None:
        config_path = model_dir / "config.pbtxt"
        backup = config_path.with_name(f"config.pbtxt.bak-{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.copy2(config_path, backup)
        config_path.write_text(rewrite_config(config_path.read_text(), best.trial), encoding="utf-8")
        report.written, report.backup = str(config_path), str(backup)
    return report
