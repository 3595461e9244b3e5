"""`tei-export soak`: a bounded load soak with every answer checked and the server's memory watched.

``requests`` requests (one real text each: the verify corpus, shuffled and cycled) go to one token model, or to the
text model beside one (``<name>_text``), at ``concurrency`` in flight, interleaved over the chosen protocols (request k
goes to protocol k mod n, so HTTP and gRPC share the run and the dynamic batcher sees both at once). For a token model
texts are tokenized client-side with the model's own tokenizer, padded to length buckets at concurrency > 1 as verify
does; a text model gets each text as a UTF-8 string (BYTES ``[1, 1]``) and tokenizes it itself. Every answer is
compared with ``SentenceTransformer.encode`` of its text (with the prompt the text model applies; computed once per
distinct text) within the export's tolerance. The loop
is bounded by the request count and by ``max_seconds``; errors, timeouts and parity failures are counted apart.

Meanwhile a thread samples the resident memory (VmRSS) of every process in the server's process group (tritonserver
and, with the compatibility backend, its Python stubs), found by process group id, never by name. Warm-up is the
first ``warmup_fraction`` of the requests (10 %), or one pass of the corpus over every protocol when that is longer
(so the server has seen every padded length and both front ends): growth is measured from the first sample after
warm-up to the last sample, after the load, and passes under ``max_growth_pct`` (5 %).
"""
from __future__ import annotations

import itertools
import math
import os
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import ServerError, TeiExportError, first_line
from ..report_json import dumps, plain
from ..triton.memory import MemoryReport, MemorySampler
from ..triton_client import PROTOCOLS, TritonClient
from .parity import compare, tolerance_for

Progress = Callable[[str], None]


@dataclass(frozen=True)
class SoakOptions:
    repository: Path
    model: str
    requests: int = 10_000  # in all, split evenly over the protocols
    concurrency: int = 64
    protocols: tuple[str, ...] = PROTOCOLS
    backend: str | None = None  # auto, nvidia, compat (None: $TEI_EXPORT_BACKEND, else auto)
    max_seconds: float = 1800.0  # the load stops taking new requests after this; in flight ones finish
    url: str | None = None  # a running server (one protocol); its memory is not sampled
    binary: str | None = None  # tritonserver for the server started here
    corpus_size: int = 48  # docstring sentences of the verify corpus (its edge cases come on top)
    request_timeout_s: float = 60.0
    sample_interval_s: float = 0.5
    warmup_fraction: float = 0.10
    max_growth_pct: float = 5.0

    def validate(self) -> None:
        if self.requests < 1 or self.concurrency < 1 or self.max_seconds <= 0 or self.corpus_size < 1:
            raise TeiExportError("requests, concurrency, max seconds and corpus size must be positive",
                                 fix="pass positive numbers", where="soak options")
        if not self.protocols or set(self.protocols) - set(PROTOCOLS):
            raise TeiExportError(f"unknown protocol(s) in {self.protocols}", fix="use http and/or grpc",
                                 where="--protocol")
        if self.url and len(self.protocols) != 1:
            raise TeiExportError("--url names one endpoint, so it needs one protocol",
                                 fix="add --protocol http or --protocol grpc")


# ---------------------------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class ProtocolResult:
    protocol: str
    sent: int = 0
    ok: int = 0
    errors: int = 0
    timeouts: int = 0
    parity_failures: int = 0
    checked: int = 0  # answers compared with the reference (every answer that came back)
    seq_per_s: float = 0.0  # this protocol's ok answers over the whole run (the protocols share it)
    p50_ms: float = float("nan")
    p95_ms: float = float("nan")
    p99_ms: float = float("nan")
    max_abs_diff: float = 0.0
    min_cosine: float = 1.0
    first_error: str | None = None
    first_parity_failure: str | None = None
    latencies: list[float] = field(default_factory=list, repr=False)

    @property
    def failed(self) -> int:
        return self.errors + self.timeouts + self.parity_failures


@dataclass
class SoakReport:
    options: dict
    model: str
    server: str  # which tritonserver, which backend folder (or the --url)
    server_version: str
    served_by: str
    backend: str  # "nvidia" or "compat" for a server started here; "" for --url
    cpu: str
    cores: int
    tolerance: str
    distinct_texts: int
    kind: str = "tokens"  # what a request carries: "tokens" (a token model) or "text" (UTF-8 strings, <name>_text)
    seconds: float = 0.0
    protocols: list[ProtocolResult] = field(default_factory=list)
    inferences: int = 0  # server statistics over the load (one text per request: = requests executed)
    executions: int = 0
    memory: MemoryReport = field(default_factory=lambda: MemoryReport(False))

    @property
    def requested(self) -> int:
        return int(self.options["requests"])

    @property
    def sent(self) -> int:
        return sum(p.sent for p in self.protocols)

    @property
    def ok(self) -> int:
        return sum(p.ok for p in self.protocols)

    @property
    def failed(self) -> int:
        return sum(p.failed for p in self.protocols)

    @property
    def seq_per_s(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    @property
    def requests_per_execution(self) -> float | None:
        return self.inferences / self.executions if self.executions else None

    def failures(self) -> list[str]:
        """Why the soak failed; empty when it passed."""
        reasons = []
        for p in self.protocols:
            if p.errors or p.timeouts:
                reasons.append(f"{p.protocol}: {p.errors} request error(s), {p.timeouts} timeout(s); first: "
                               f"{p.first_error}")
            if p.parity_failures:
                reasons.append(f"{p.protocol}: {p.parity_failures} answer(s) outside {self.tolerance}; first: "
                               f"{p.first_parity_failure}")
        if self.sent < self.requested:
            reasons.append(f"stopped at the time bound ({self.options['max_seconds']:g} s) after {self.sent} of "
                           f"{self.requested} requests (raise --max-seconds or lower --requests)")
        if self.memory.passed is False:
            growth = self.memory.growth_pct
            reasons.append("server memory grew " + (f"{growth:+.1f} % after warm-up (limit {self.memory.limit_pct:g} %)"
                                                    if growth is not None else "unjudged: no sample after warm-up"))
        return reasons

    @property
    def passed(self) -> bool:
        return self.sent > 0 and not self.failures()

    def to_dict(self) -> dict:
        """Plain JSON types; NaN and infinite figures (no answers, a wrongly shaped answer) become None."""
        return plain({
            "passed": self.passed, "failures": self.failures(), "options": self.options, "model": self.model,
            "server": self.server, "server_version": self.server_version, "served_by": self.served_by,
            "backend": self.backend, "kind": self.kind,
            "cpu": self.cpu, "cores": self.cores, "tolerance": self.tolerance, "distinct_texts": self.distinct_texts,
            "seconds": self.seconds, "requested": self.requested, "sent": self.sent, "ok": self.ok,
            "failed": self.failed, "seq_per_s": self.seq_per_s, "inferences": self.inferences,
            "executions": self.executions, "requests_per_execution": self.requests_per_execution,
            "protocols": [{**{k: v for k, v in asdict(p).items() if k != "latencies"}, "failed": p.failed}
                          for p in self.protocols],
            "memory": self.memory.to_dict()})

    def write(self, out_dir: Path, name: str) -> Path:
        path = Path(out_dir) / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        text = dumps(self.to_dict())
        # one line per memory sample (a list of numbers), not one per number: the file stays short and readable
        text = re.sub(r"\[\s+([-\d.,\s]+?)\s+\]", lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text)
        path.write_text(text + "\n", encoding="utf-8")
        return path

    def table(self) -> str:
        o = self.options
        sent_as = ", sent as UTF-8 strings: the text model tokenizes them" if self.kind == "text" else ""
        lines = [f"soak of {self.model}: {self.sent} of {self.requested} requests at concurrency {o['concurrency']}, "
                 f"interleaved over {'/'.join(o['protocols'])}, {self.distinct_texts} distinct texts (the verify "
                 f"corpus, cycled{sent_as}), {self.seconds:.1f} s"]
        head = ("protocol", "sent", "ok", "failed", "errors", "timeouts", "parity", "seq/s", "p50 ms", "p95 ms",
                "p99 ms", "max|diff|", "min cos")
        rows = [head] + [(p.protocol, str(p.sent), str(p.ok), str(p.failed), str(p.errors), str(p.timeouts),
                          str(p.parity_failures), f"{p.seq_per_s:.1f}", f"{p.p50_ms:.1f}", f"{p.p95_ms:.1f}",
                          f"{p.p99_ms:.1f}", f"{p.max_abs_diff:.2e}", f"{p.min_cosine:.7f}") for p in self.protocols]
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
        lines.append(f"all: {self.ok} ok, {self.failed} failed, {self.seq_per_s:.1f} seq/s (a protocol's seq/s is its "
                     f"share of the one interleaved run); every answer that came back checked against "
                     f"sentence-transformers ({self.tolerance})")
        if self.executions:
            lines.append(f"server statistics: {self.inferences} requests in {self.executions} executions "
                         f"({self.requests_per_execution:.2f} requests per execution: what the dynamic batcher merged)")
        lines.append(f"server: {self.server}")
        lines.append(f"served by: {self.served_by}")
        m = self.memory
        if not m.sampled:
            lines.append(f"memory: not sampled ({m.note})")
        else:
            procs = max((s.processes for s in m.samples), default=0)

            def mb(value):
                return "n/a" if value is None else f"{value:.1f} MB"

            growth = "n/a" if m.growth_pct is None else f"{m.growth_pct:+.2f} %"
            lines.append(f"memory: RSS of the server's process group {m.pgid} ({procs} process(es)), {len(m.samples)} "
                         f"samples every {m.interval_s:g} s; warm-up = the first {m.warmup_requests} requests "
                         f"answered (the first {100 * o['warmup_fraction']:g} %, or one pass of the corpus over "
                         "every protocol if longer)")
            lines.append(f"  start {mb(m.start_mb)}, after warm-up {mb(m.after_warmup_mb)}, peak {mb(m.peak_mb)}, "
                         f"end {mb(m.end_mb)}; growth after warm-up {growth} (limit {m.limit_pct:g} %): "
                         + ("ok" if m.passed else "FAIL"))
        lines.append(f"cpu: {self.cpu} ({self.cores} cores; figures differ by processor)")
        lines += [f"FAIL: {r}" for r in self.failures()]
        verdict = "PASS" if self.passed else "FAIL"
        lines.append(f"verdict: {verdict}" + (" (memory not checked)" if self.passed and not m.sampled else ""))
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# The load
# ---------------------------------------------------------------------------------------------------------------
def _is_timeout(err: Exception) -> bool:
    status = getattr(err, "status", None)
    status = status() if callable(status) else status
    # gRPC: DEADLINE_EXCEEDED; HTTP (geventhttpclient): socket timeouts or gevent's Timeout
    return status == "StatusCode.DEADLINE_EXCEEDED" or isinstance(err, TimeoutError) or \
        "Timeout" in type(err).__name__


class _Load:
    """The request loop: ``concurrency`` threads take request numbers from one counter until the count or the time
    bound is reached; each thread keeps one client per protocol."""

    def __init__(self, options: SoakOptions, urls: dict[str, str], model: str, output: str, requests: list,
                 expected: np.ndarray, texts: list[str], tolerance, progress: Progress | None):
        self.o, self.urls, self.model, self.output = options, urls, model, output
        self.requests, self.expected, self.texts, self.tolerance = requests, expected, texts, tolerance
        self.progress = progress
        self.results = {p: ProtocolResult(p) for p in options.protocols}
        self.answered = 0
        # the first 10 %, or one pass of the corpus over every protocol (every shape seen once) when that is longer
        self.warmup = min(options.requests, max(1, math.ceil(options.warmup_fraction * options.requests),
                                                len(requests) * len(options.protocols)))
        self.on_warmup: Callable[[], None] = lambda: None
        self._lock = threading.Lock()
        self._counter = itertools.count()
        self._step = max(1, options.requests // 10)

    def run(self) -> float:
        self._deadline = time.monotonic() + self.o.max_seconds
        threads = [threading.Thread(target=self._worker, daemon=True, name=f"soak-{i}")
                   for i in range(min(self.o.concurrency, self.o.requests))]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.perf_counter() - start

    def _worker(self) -> None:
        clients: dict[str, TritonClient] = {}
        n = len(self.o.protocols)
        try:
            while True:
                k = next(self._counter)
                if k >= self.o.requests or time.monotonic() >= self._deadline:
                    return
                protocol = self.o.protocols[k % n]
                i = (k // n) % len(self.requests)  # every protocol cycles through every text
                t0 = time.perf_counter()
                try:
                    if protocol not in clients:
                        clients[protocol] = TritonClient(self.urls[protocol], protocol, self.o.request_timeout_s)
                    got = clients[protocol].infer(self.model, self.requests[i], [self.output])[self.output]
                except Exception as err:  # counted, never raised from a thread
                    self._record(protocol, i, None, time.perf_counter() - t0, err)
                    continue
                self._record(protocol, i, got, time.perf_counter() - t0, None)
        finally:
            for c in clients.values():
                c.close()

    def _record(self, protocol: str, i: int, got, latency: float, err: Exception | None) -> None:
        if err is None:
            try:
                max_abs, min_cos = compare(self.expected[i:i + 1], np.asarray(got, np.float32).reshape(1, -1))
                why = f"max|diff| {max_abs:.2e}, cosine {min_cos:.7f}"
            except ValueError as bad:  # a wrongly shaped answer is a parity failure, with the shapes named
                max_abs, min_cos, why = float("inf"), float("-inf"), str(bad)
            within = self.tolerance.accepts(max_abs, min_cos)
        with self._lock:
            r = self.results[protocol]
            r.sent += 1
            if err is not None:
                if _is_timeout(err):
                    r.timeouts += 1
                else:
                    r.errors += 1
                r.first_error = r.first_error or f"{type(err).__name__}: {first_line(err, 200)}"
            else:
                r.checked += 1
                r.latencies.append(latency)
                r.max_abs_diff, r.min_cosine = max(r.max_abs_diff, max_abs), min(r.min_cosine, min_cos)
                if within:
                    r.ok += 1
                else:
                    r.parity_failures += 1
                    r.first_parity_failure = r.first_parity_failure or f"text {self.texts[i][:60]!r}: {why}"
            self.answered += 1
            answered = self.answered
        if answered == self.warmup:
            self.on_warmup()
        if self.progress and (answered % self._step == 0 or answered == self.o.requests):
            failed = sum(x.failed for x in self.results.values())
            self.progress(f"{answered}/{self.o.requests} requests answered, {failed} failed")


# ---------------------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------------------
def models_to_load(target, name: str, text: bool) -> list[str]:
    """What a server started for ``name`` alone loads: the model; for a Python text model (an ensemble, or a BLS
    model sending to a ragged one) also the token model and the tokenizer model it calls. A graph text model
    (``pytorch_libtorch``) needs nothing beside it."""
    from ..export.text_models import tokenizer_name

    if not text or target.graph_text:
        return [name]
    tokenizer = tokenizer_name(target.name)
    return [name, target.name] + ([tokenizer] if (target.model_dir.parent / tokenizer).is_dir() else [])


def run_soak(options: SoakOptions, server=None, progress: Progress | None = None) -> SoakReport:
    """Soak ``options.model``: on ``server`` (a running :class:`~exporter.triton.server.TritonServer`), else on
    ``options.url``, else on a server started here (127.0.0.1, the model alone) and stopped by its process group."""
    from ..bench import BenchOptions
    from ..bench.machine import cpu_info
    from ..bench.measure import percentiles
    from ..bench.workloads import build_workloads
    from ..export.reader import resolve_name
    from ..tokens import TextRequestBuilder, request_builder
    from ..triton.backends import served_by
    from ..triton.server import TritonServer

    options.validate()
    repo = Path(options.repository)
    target, text = resolve_name(repo, options.model)
    meta = target.metadata
    own = None
    if server is None and options.url is None:
        if progress:
            progress(f"starting tritonserver on {repo} (model {options.model} only)")
        own = server = TritonServer(repo, binary=options.binary, backend=options.backend,
                                    model_control_mode="explicit",
                                    load_models=models_to_load(target, options.model, text)).start()
    try:
        if server is not None:
            urls = {"http": server.http_url, "grpc": server.grpc_url}
            described = server.describe()
            version, who, backend = server.binary.version, server.served_by(options.model), server.backends.pytorch
            memory = MemoryReport(True, pgid=server.pgid)
        else:
            urls = {options.protocols[0]: options.url}
            try:
                with TritonClient(options.url, options.protocols[0], 10.0) as c:
                    version = c.server_version()
                    served = c.model(options.model)
            except Exception as err:
                raise ServerError(f"no Triton answers at {options.url} over {options.protocols[0]}: "
                                  f"{type(err).__name__}: {first_line(err, 200)}",
                                  fix=f"start it (tei-export serve {repo}) and pass its {options.protocols[0]} "
                                      "address, or leave --url out to let soak start one") from None
            described, backend = f"Triton {version} at {options.url}", ""
            who = served_by(served.backend, served.runtime, served.platform)
            memory = MemoryReport(False, note="--url: the server was not started here, so its processes are not "
                                              "known; leave --url out to have memory sampled")
        memory.interval_s, memory.limit_pct = options.sample_interval_s, options.max_growth_pct

        with TritonClient(urls[options.protocols[0]], options.protocols[0]) as admin:
            served = admin.model(options.model)
            tokenizer = target.tokenizer()
            corpus = build_workloads(tokenizer, meta.max_seq_len, BenchOptions(
                repo, options.model, workloads=("mixed",), mixed_texts=options.corpus_size))["mixed"]
            texts = list(dict.fromkeys(corpus))  # expected rows once per distinct text
            build = TextRequestBuilder(served.inputs[0].name) if text else \
                request_builder(meta, tokenizer, served, options.concurrency > 1)
            requests = [build([t]) for t in texts]
            if progress:
                progress(f"eager sentence-transformers on {len(texts)} distinct texts")
            reference = target.reference()
            expected = (target.text_rows(reference, texts) if text else reference.encode(texts)).astype(np.float64)
            tolerance = tolerance_for(meta.dtype, meta.device)
            report = SoakReport(options={k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()},
                                model=options.model, server=described, server_version=version, served_by=who,
                                backend=backend, cpu=cpu_info()[0], cores=os.cpu_count() or 0,
                                tolerance=tolerance.describe(), distinct_texts=len(texts), memory=memory,
                                kind="text" if text else "tokens")
            load = _Load(options, urls, options.model, served.outputs[0].name, requests, expected, texts, tolerance,
                         progress)
            memory.warmup_requests = load.warmup
            sampler = MemorySampler(memory, lambda: load.answered) if memory.sampled else None
            before = admin.statistics(options.model)
            if progress:
                progress(f"{options.requests} requests at concurrency {options.concurrency} over "
                         f"{'/'.join(options.protocols)}, at most {options.max_seconds:g} s")
            if sampler:
                load.on_warmup = sampler.wake
                sampler.start(time.monotonic())
            try:
                report.seconds = load.run()
            finally:
                if sampler:
                    sampler.stop()
            answered = sum(r.checked for r in load.results.values())
            after = admin.statistics(options.model, at_least=before[0] + answered)
        report.inferences, report.executions = after[0] - before[0], after[1] - before[1]
        for r in load.results.values():
            r.seq_per_s = r.ok / report.seconds if report.seconds else 0.0
            r.p50_ms, r.p95_ms, r.p99_ms = percentiles(r.latencies)
            report.protocols.append(r)
        return report
    finally:
        if own is not None:
            if progress:
                progress(f"stopping tritonserver (process group {own.pgid})")
            own.stop()
