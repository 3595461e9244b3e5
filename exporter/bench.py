"""`tei-export bench`: one run, one corpus, one thread count, every way of computing the same embeddings.

Modes, side by side:

* in-process (batch sweep): eager sentence-transformers, the exported TorchScript fp32 ``model.pt``, TorchScript
  bf16 (the repository's bf16 export, else traced here with the same recipe as ``trace --dtype bfloat16``), the
  AOTInductor ``model.pt2`` (the repository's pt2 export, else compiled here as ``trace --format pt2`` does), and
  ONNX Runtime on an ONNX export of the same wrapper;
* served (concurrency sweep, one text per request): the real tritonserver over gRPC and HTTP with token inputs
  (tokenized client-side, padded to length buckets so the dynamic batcher can merge), and over gRPC through the
  text ensemble ``<name>_text`` when the repository has one; and a peer server, infinity-emb
  (``infinity_emb v2 --engine torch --device cpu`` on 127.0.0.1, its OpenAI-style ``POST /embeddings``), started and
  stopped here when its executable is found (``--infinity``, ``$TEI_EXPORT_INFINITY``, or on PATH).

Every mode's embeddings are compared with ``SentenceTransformer.encode`` on the workload's texts (an untimed
first pass that doubles as warm-up); the timed part is bounded by a call count and by time. Figures: seq/s,
tokens/s (real tokens, padding excluded), p50/p95/p99 latency per call, ratios to in-process TorchScript fp32 and
ONNX Runtime fp32 of the same run, and achieved model FLOP/s as a fraction of a plain fp32 matmul's FLOP/s on the
same threads (the machine's own limit). Nothing here asserts anything about time: the caller reads the ratios.
"""
from __future__ import annotations

import copy
import itertools
import json
import os
import platform
import random
import re
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .corpus import build_corpus, count_tokens, docstring_items, stdlib_sentences
from .errors import ServerError, TeiExportError, first_line
from .parity import Tolerance, compare, tolerance_for
from .tokens import DEFAULT_BUCKETS, encode_batch

Progress = Callable[[str], None]

EAGER, TS_FP32, TS_BF16, ORT_FP32 = "eager", "torchscript_fp32", "torchscript_bf16", "onnxruntime_fp32"
PT2_FP32 = "pt2_fp32"
GRPC, HTTP, TEXT_GRPC, INFINITY = "triton_grpc", "triton_http", "triton_text_grpc", "infinity_emb"
IN_PROCESS_MODES = (EAGER, TS_FP32, TS_BF16, PT2_FP32, ORT_FP32)
SERVER_MODES = (GRPC, HTTP, TEXT_GRPC)  # Triton's; INFINITY is served too, by a peer server
# The served modes on the compatibility backend when NVIDIA's is measured too (the plain names are NVIDIA's then)
COMPAT_SUFFIX = "_compat"
SERVER_MODES_COMPAT = tuple(m + COMPAT_SUFFIX for m in SERVER_MODES)
WORKLOADS = ("short", "mixed", "long")
SHORT_MAX_TOKENS = 20


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
    max_calls: int = 400  # timed calls (in-process) or requests (served) per cell, at most
    max_seconds: float = 2.5  # timed seconds per cell, at most
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
                     f"{self.machine.get('matmul_gflop_per_s', {}).get('fp32', 0):.1f} GFLOP/s (the %peak base)")
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
        results.write_text(json.dumps(self.to_dict(), indent=2, default=_json_default) + "\n", encoding="utf-8")
        return [results, plot(self, out_dir / "bench.png")]


def _json_default(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not np.isfinite(value):
        return None
    raise TypeError(type(value).__name__)


# ---------------------------------------------------------------------------------------------------------------
# Workloads, FLOPs, the machine's limit
# ---------------------------------------------------------------------------------------------------------------
def build_workloads(tokenizer, max_seq_len: int, options: BenchOptions) -> dict[str, list[str]]:
    """short: single docstring sentences of <= 20 tokens; mixed: the verify corpus (docstrings + edge cases,
    shuffled so any prefix is representative); long: documents of stdlib prose that fill max_seq_len."""
    workloads: dict[str, list[str]] = {}
    if "short" in options.workloads:
        pool = [i.text for i in docstring_items(min(len(stdlib_sentences()), 20 * options.short_texts + 50), seed=1)]
        workloads["short"] = [t for t in pool if count_tokens(tokenizer, t) <= SHORT_MAX_TOKENS][:options.short_texts]
    if "mixed" in options.workloads:
        texts = [i.text for i in build_corpus(options.mixed_texts, tokenizer=tokenizer, max_seq_len=max_seq_len)]
        random.Random(0).shuffle(texts)
        workloads["mixed"] = texts
    if "long" in options.workloads:
        sentences = stdlib_sentences()
        docs = []
        for d in range(options.long_texts):
            j, parts = (d * 97) % len(sentences), []
            while count_tokens(tokenizer, " ".join(parts)) < max_seq_len:
                parts.extend(sentences[(j + k) % len(sentences)] for k in range(8))
                j += 8
            docs.append(" ".join(parts))
        workloads["long"] = docs
    return workloads


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


def matmul_gflops(threads: int, dtype: torch.dtype = torch.float32, n: int = 1024, seconds: float = 1.0) -> float:
    """A plain n x n matmul's GFLOP/s on ``threads`` threads: what this machine can do at best."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    with torch.inference_mode():
        for _ in range(3):
            a @ b
        calls, start = 0, time.perf_counter()
        while calls < 3 or time.perf_counter() - start < seconds:
            a @ b
            calls += 1
        elapsed = time.perf_counter() - start
    return 2.0 * n ** 3 * calls / elapsed / 1e9


def machine_info(threads: int, quick: bool) -> dict:
    cpu, flags = platform.processor() or "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not cpu.strip():
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags.update(line.split(":", 1)[1].split())
    except OSError:
        pass
    seconds = 0.2 if quick else 1.0
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": threads,
            "bf16_flags": sorted(flags & {"avx512_bf16", "amx_bf16"}),
            "matmul_gflop_per_s": {"fp32": matmul_gflops(threads, torch.float32, seconds=seconds),
                                   "bf16": matmul_gflops(threads, torch.bfloat16, seconds=seconds)},
            "torch": torch.__version__, "python": platform.python_version()}


def _percentiles(latencies: list[float]) -> tuple[float, float, float]:
    if not latencies:
        return float("nan"), float("nan"), float("nan")
    p = np.percentile(np.asarray(latencies) * 1e3, [50, 95, 99])
    return float(p[0]), float(p[1]), float(p[2])


def _parity(expected: np.ndarray, got: np.ndarray, tolerance: Tolerance) -> Parity:
    max_abs, min_cos = compare(expected, got)
    return Parity(tolerance.accepts(max_abs, min_cos), max_abs, min_cos, tolerance.describe(), int(len(expected)))


# ---------------------------------------------------------------------------------------------------------------
# In-process modes
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class _Chunk:
    tensors: tuple[torch.Tensor, ...]
    rows: int
    real_tokens: int
    padded_len: int


def _chunks(tokenizer, texts: list[str], batch: int, max_seq_len: int, input_names) -> list[_Chunk]:
    chunks = []
    for i in range(0, len(texts), batch):
        arrays = encode_batch(tokenizer, texts[i:i + batch], max_seq_len, input_names)
        tensors = tuple(torch.from_numpy(arrays[n]) for n in input_names)
        mask = arrays["attention_mask"]
        chunks.append(_Chunk(tensors, mask.shape[0], int(mask.sum()), mask.shape[1]))
    return chunks


def _measure_in_process(fn, chunks: list[_Chunk], expected: np.ndarray, tolerance: Tolerance, flop: FlopModel,
                        peak: float, options: BenchOptions, cell: Cell) -> Cell:
    with torch.inference_mode():
        got = torch.cat([fn(*c.tensors).float() for c in chunks]).numpy()  # parity pass, also the warm-up
        cell.parity = _parity(expected, got, tolerance)
        latencies, seqs, tokens, flops = [], 0, 0, 0.0
        start = time.perf_counter()
        for k in itertools.count():
            if k >= options.max_calls or (k > 0 and time.perf_counter() - start >= options.max_seconds):
                break
            c = chunks[k % len(chunks)]
            t0 = time.perf_counter()
            fn(*c.tensors)
            latencies.append(time.perf_counter() - t0)
            seqs, tokens, flops = seqs + c.rows, tokens + c.real_tokens, flops + flop.flops(c.rows, c.padded_len)
        elapsed = time.perf_counter() - start
    cell.calls, cell.seqs, cell.seconds = len(latencies), seqs, elapsed
    cell.seq_per_s, cell.tokens_per_s = seqs / elapsed, tokens / elapsed
    cell.p50_ms, cell.p95_ms, cell.p99_ms = _percentiles(latencies)
    cell.model_gflop_per_s = flops / elapsed / 1e9
    cell.fraction_of_matmul_peak = cell.model_gflop_per_s / peak if peak else 0.0
    return cell


# ---------------------------------------------------------------------------------------------------------------
# Served modes: our own load generator (threads, one client each, bounded by requests and time)
# ---------------------------------------------------------------------------------------------------------------
def _client(url, protocol):
    """A client with ``infer(model, request, [output])``, ``statistics(model)`` and ``close()``: Triton's (grpc,
    http) or infinity-emb's (:data:`OPENAI`)."""
    if protocol == OPENAI:
        return InfinityClient(url)
    from .triton_client import TritonClient

    return TritonClient(url, protocol)


def _send_all(url, protocol, model, requests, output, concurrency) -> np.ndarray:
    from concurrent.futures import ThreadPoolExecutor

    local, clients, lock = threading.local(), [], threading.Lock()

    def one(req):
        if not hasattr(local, "c"):
            local.c = _client(url, protocol)
            with lock:
                clients.append(local.c)
        return np.asarray(local.c.infer(model, req, [output])[output], dtype=np.float32).reshape(1, -1)

    try:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            return np.concatenate(list(pool.map(one, requests)), axis=0)
    finally:
        for c in clients:
            c.close()


def _load(url, protocol, model, requests, costs, output, concurrency, options: BenchOptions):
    """Timed load: ``concurrency`` threads send requests round-robin until max_calls are sent or time is up."""
    workers = max(1, min(concurrency, options.max_calls))
    clients = [_client(url, protocol) for _ in range(workers)]
    counter, latencies, done, errors = itertools.count(), [], [], []
    gate = threading.Barrier(workers + 1)
    state = {}

    def worker(client):
        gate.wait()
        while not errors:
            k = next(counter)
            if k >= options.max_calls or time.perf_counter() - state["start"] >= options.max_seconds:
                return
            req = requests[k % len(requests)]
            t0 = time.perf_counter()
            try:
                client.infer(model, req, [output])
            except Exception as err:  # reported in the cell, not raised from a thread
                errors.append(f"{type(err).__name__}: {first_line(err, 200)}")
                return
            latencies.append(time.perf_counter() - t0)
            done.append(k % len(requests))

    threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in clients]
    for t in threads:
        t.start()
    state["start"] = time.perf_counter()
    gate.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - state["start"]
    for c in clients:
        c.close()
    return latencies, done, elapsed, errors


def _served_cell(cell: Cell, url, protocol, model, requests, costs, output, expected, tolerance, flop, peak,
                 options: BenchOptions) -> Cell:
    try:
        got = _send_all(url, protocol, model, requests, output, cell.concurrency)
        cell.parity = _parity(expected, got, tolerance)
        with _client(url, protocol) as admin:
            before = admin.statistics(model)
            cpu_before = time.process_time()
            latencies, done, elapsed, errors = _load(url, protocol, model, requests, costs, output,
                                                     cell.concurrency, options)
            cell.client_cpu_cores = (time.process_time() - cpu_before) / elapsed
            after = admin.statistics(model)
        executions = after[1] - before[1] if before and after else 0  # infinity-emb reports no batch counts
        cell.server_avg_batch = (after[0] - before[0]) / executions if executions > 0 else None
    except Exception as err:
        cell.error = f"{type(err).__name__}: {first_line(err, 200)}"
        return cell
    if errors:
        cell.error = errors[0]
        return cell
    cell.calls = cell.seqs = len(done)
    cell.seconds = elapsed
    cell.seq_per_s = len(done) / elapsed
    cell.tokens_per_s = sum(costs[i][0] for i in done) / elapsed
    cell.p50_ms, cell.p95_ms, cell.p99_ms = _percentiles(latencies)
    cell.model_gflop_per_s = sum(flop.flops(1, costs[i][1]) for i in done) / elapsed / 1e9
    cell.fraction_of_matmul_peak = cell.model_gflop_per_s / peak if peak else 0.0
    return cell


def _text_request(served, text: str) -> dict[str, np.ndarray]:
    first = served.inputs[0]
    shape = ((1,) if served.max_batch_size > 0 else ()) + tuple(1 for _ in first.dims or (1,))
    return {first.name: np.array([text.encode("utf-8")], dtype=np.object_).reshape(shape)}


# ---------------------------------------------------------------------------------------------------------------
# infinity-emb: a peer embedding server (its own venv), started and stopped here
# ---------------------------------------------------------------------------------------------------------------
OPENAI = "openai"  # the "protocol" of infinity-emb's cells: POST /embeddings, OpenAI-style
INFINITY_ENV = "TEI_EXPORT_INFINITY"
# torch pinned first, as scripts/env.sh does: unpinned, pip would pull a multi-GB CUDA build
INFINITY_INSTALL = ("install it in a venv of its own (its pins differ from this project's): python -m venv /opt/inf && "
                    f"/opt/inf/bin/pip install torch=={torch.__version__.split('+')[0]} && /opt/inf/bin/pip install "
                    "'infinity-emb[server,torch]'; then pass --infinity /opt/inf/bin/infinity_emb or set "
                    f"{INFINITY_ENV}")


def find_infinity(path: str | None) -> tuple[Path | None, str]:
    """The ``infinity_emb`` executable: ``path``, else ``$TEI_EXPORT_INFINITY``, else next to this Python, else on
    PATH. Returns (executable, "") or (None, the mode status saying why not)."""
    import shutil

    from .triton.binary import python_bin_dir

    if path == "":
        return None, "not measured: --no-infinity"
    given = path or os.environ.get(INFINITY_ENV)
    if given:
        where = "--infinity" if path else f"${INFINITY_ENV}"
        found = shutil.which(given)
        return (Path(found), "") if found else (None, f"error: {where} {given} is not an executable file")
    found = shutil.which("infinity_emb", path=os.pathsep.join([str(python_bin_dir()), os.environ.get("PATH", "")]))
    return (Path(found), "") if found else (None, f"not measured: not installed ({INFINITY_INSTALL})")


class InfinityClient:
    """One keep-alive HTTP connection to infinity-emb's ``POST /embeddings``; texts in, float32 vectors out
    (``encoding_format: base64``, the raw float32 bytes, as OpenAI's own client asks for them)."""

    def __init__(self, url: str, timeout: float = 120.0):
        import http.client

        host, port = url.rsplit(":", 1)
        self._conn = http.client.HTTPConnection(host, int(port), timeout=timeout)

    def get(self, path: str) -> dict:
        return self._call("GET", path, None)

    def infer(self, model: str, text: str, outputs) -> dict[str, np.ndarray]:
        import base64

        body = {"model": model, "input": [text], "encoding_format": "base64"}
        item = self._call("POST", "/embeddings", body)["data"][0]["embedding"]
        return {outputs[0]: np.frombuffer(base64.b64decode(item), dtype=np.float32)}

    def statistics(self, model: str) -> None:
        return None  # no per-execution batch counts on infinity-emb's side

    def _call(self, method: str, path: str, body: dict | None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        self._conn.request(method, path, data, {"Content-Type": "application/json"} if data else {})
        response = self._conn.getresponse()
        text = response.read()
        if response.status != 200:
            raise RuntimeError(f"infinity-emb {method} {path}: HTTP {response.status}: {text[:200]!r}")
        return json.loads(text)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "InfinityClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class InfinityServer:
    """``infinity_emb v2 --engine torch --device cpu`` serving ``model_dir`` on 127.0.0.1 (a free port), offline, in
    a process group of its own; :meth:`stop` signals that group (SIGTERM, then SIGKILL after ``stop_timeout``)."""

    def __init__(self, executable: Path, model_dir: Path, name: str, batch_size: int, threads: int,
                 startup_timeout: float = 180.0, stop_timeout: float = 15.0):
        self.executable, self.model_dir, self.name = Path(executable), Path(model_dir), name
        self.batch_size, self.threads = batch_size, threads
        self.startup_timeout, self.stop_timeout = startup_timeout, stop_timeout
        self.url = self.version = ""
        self.pgid: int | None = None
        self.log_path: Path | None = None
        self.command: list[str] = []
        self._proc = None

    def start(self) -> "InfinityServer":
        import subprocess

        from .triton.process import free_port

        port = free_port("127.0.0.1")
        self.url = f"127.0.0.1:{port}"
        # float32, no torch.compile, no BetterTransformer, no vector cache: the same computation as the other modes;
        # warnings only (no access-log line per request)
        self.command = [str(self.executable), "v2", "--model-id", str(self.model_dir), "--served-model-name",
                        self.name, "--engine", "torch", "--device", "cpu", "--dtype", "float32", "--no-compile",
                        "--no-bettertransformer", "--no-vector-disk-cache", "--batch-size", str(self.batch_size),
                        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("INFINITY_") and k not in ("PYTHONPATH", "PYTHONHOME")}
        env.update(HF_HUB_OFFLINE="1", DO_NOT_TRACK="1", INFINITY_ANONYMOUS_USAGE_STATS="0",
                   OMP_NUM_THREADS=str(self.threads))
        fd, name = tempfile.mkstemp(prefix="infinity-emb-", suffix=".log")
        self.log_path = Path(name)
        with os.fdopen(fd, "wb") as log:
            log.write(("$ " + " ".join(self.command) + "\n").encode())
            log.flush()
            self._proc = subprocess.Popen(self.command, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        self.pgid = self._proc.pid  # start_new_session: it leads its own group
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while True:  # /health answers once uvicorn listens, which is after the model is loaded and warmed up
            code = self._proc.poll()
            if code is not None:
                raise ServerError(f"infinity-emb exited with code {code} during startup: {self.log_tail()}",
                                  fix=f"read its log at {self.log_path}", where=str(self.executable))
            models = None
            try:
                with InfinityClient(self.url, timeout=5.0) as client:
                    client.get("/health")
                    models = [m.get("id") for m in client.get("/models").get("data", [])]
                    self.version = client.get("/openapi.json").get("info", {}).get("version", "?")
            except Exception:  # not listening yet (connection refused), or not answering yet
                pass
            if models is not None:
                if self.name not in models:
                    raise ServerError(f"infinity-emb serves {models}, not {self.name}", where=str(self.executable))
                return
            if time.monotonic() > deadline:
                raise ServerError(f"infinity-emb did not answer on {self.url} within {self.startup_timeout:.0f} s: "
                                  f"{self.log_tail()}", fix=f"read its log at {self.log_path}",
                                  where=str(self.executable))
            time.sleep(0.25)

    def log_tail(self) -> str:
        """The log's error lines (the exception, not its traceback frames), else its last lines."""
        from .triton.server_log import error_lines, last_lines

        text = self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path else ""
        return error_lines(text, 3) or last_lines(text, 8)

    def stop(self) -> None:
        from .triton.process import stop_group

        proc, self._proc = self._proc, None
        if proc is not None:
            stop_group(proc, self.pgid, self.stop_timeout)

    def __enter__(self) -> "InfinityServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _measure_infinity(report, options, target, tokenizer, workloads, expected, flop, peak, progress) -> None:
    """infinity-emb on the eager reference's model folder: the concurrency sweep of Triton's cells, same texts,
    same bounded load generator, one text per request, parity against the same rows."""
    from .triton_config import read_config

    meta = target.metadata

    executable, why = find_infinity(options.infinity)
    if executable is None:
        report.modes.append(ModeInfo(INFINITY, why))
        return
    model_dir = Path(meta.source_path)
    if not model_dir.is_dir():
        report.modes.append(ModeInfo(INFINITY, f"not measured: the export's source folder {model_dir} is not on disk"))
        return
    batch_size = max(1, read_config(target.model_dir / "config.pbtxt").max_batch_size)
    server = InfinityServer(executable, model_dir, options.model, batch_size, options.threads)
    _say(progress, f"starting infinity-emb ({executable}) on {model_dir}")
    try:
        server.start()
    except (ServerError, OSError) as err:
        report.modes.append(ModeInfo(INFINITY, f"error: {first_line(err, 600)}"))
        return
    try:
        report.modes.append(ModeInfo(INFINITY, "measured", (
            f"infinity-emb {server.version} ({executable}): --engine torch --device cpu --dtype float32 "
            f"--batch-size {server.batch_size} (the export's max_batch_size), OMP_NUM_THREADS={options.threads}; "
            f"texts in (tokenized on the server), one per request, POST /embeddings over HTTP keep-alive")))
        tol = tolerance_for(meta.dtype, meta.device)
        total, k = len(workloads) * len(options.concurrencies), 0
        for workload, texts in workloads.items():
            tokens = [min(count_tokens(tokenizer, t), meta.max_seq_len) for t in texts]
            costs = [(n, n) for n in tokens]  # real tokens; the server's own padding is not seen from here
            for concurrency in options.concurrencies:
                k += 1
                cell = Cell(INFINITY, workload, 1, concurrency)
                _served_cell(cell, server.url, OPENAI, options.model, texts, costs, "embedding", expected[workload],
                             tol, flop, peak, options)
                report.cells.append(cell)
                _say(progress, _cell_line(k, total, cell))
    finally:
        _say(progress, f"stopping infinity-emb (process group {server.pgid})")
        server.stop()


# ---------------------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------------------
def _say(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)


def _sibling_export(repo: Path, meta, dtype: str, fmt: str):
    """An export in ``repo`` of the same source in ``dtype`` and format ``fmt``, or None."""
    from .verify import exported_models

    return next((m for m in exported_models(repo) if m.metadata.source_path == meta.source_path
                 and m.metadata.dtype == dtype and m.metadata.format == fmt), None)


def _pt2_module(repo: Path, meta, wrapper, spec, example, scratch: Path):
    """The repository's fp32 pt2 export of the same source if there is one, else one compiled here (same recipe)."""
    from .pt2 import PT2_FILENAME, export_pt2, load_pt2

    found = _sibling_export(repo, meta, "float32", "pt2")
    if found is not None:
        return load_pt2(found.version_dir / PT2_FILENAME), f"exported model {found.name}"
    path = export_pt2(wrapper, example, spec.max_positions or spec.max_seq_len, scratch / PT2_FILENAME)
    return load_pt2(path), ("no pt2 export in the repository: compiled here with the recipe of "
                            "`trace --format pt2` (torch.export, dynamic batch and length, AOTInductor)")


def _bf16_module(repo: Path, meta, reference, spec, example):
    """The repository's bf16 export of the same source if there is one, else one traced here (same recipe)."""
    from .export import DTYPES
    from .reference import encoder_of
    from .tracing import trace
    from .wrapper import build_wrapper

    found = _sibling_export(repo, meta, "bfloat16", "torchscript")
    if found is not None:
        return torch.jit.load(str(found.version_dir / "model.pt")), f"exported model {found.name}"
    encoder = copy.deepcopy(encoder_of(reference)).to(DTYPES["bfloat16"])
    wrapper = build_wrapper(encoder, spec.input_names, spec.pooling, spec.normalize)
    return trace(wrapper, example), ("no bf16 export in the repository: traced here with the recipe of "
                                     "`trace --dtype bfloat16` (bf16 encoder, fp32 pooling)")


def _fill_ratios(report: BenchReport) -> None:
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


def _targets(report: BenchReport) -> list[dict]:
    def target(name, goal, value, met):
        return {"name": name, "goal": goal, "value": value, "met": None if value is None else bool(met(value))}

    out = []
    grpc16, ts16 = report.cell(GRPC, "short", concurrency=16), report.cell(TS_FP32, "short", 16)
    v = grpc16.seq_per_s / ts16.seq_per_s if grpc16 and ts16 else None
    out.append(target("Triton gRPC c16 single sentences / in-process TorchScript batch 16 (seq/s)", ">= 0.95", v,
                      lambda x: x >= 0.95))
    grpc1, ts1 = report.cell(GRPC, "short", concurrency=1), report.cell(TS_FP32, "short", 1)
    v = grpc1.p50_ms - ts1.p50_ms if grpc1 and ts1 else None
    out.append(target("single-request p50: Triton gRPC c1 minus in-process TorchScript batch 1 (ms)", "<= 2 ms", v,
                      lambda x: x <= 2.0))
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
    return out


def run_bench(options: BenchOptions, progress: Progress | None = None) -> BenchReport:
    """Measure every mode for ``options.model`` of ``options.repository``; see the module docstring."""
    from .reference import encoder_of
    from .spec import SpecOverrides, read_spec
    from .tokens import load_tokenizer
    from .tracing import make_inputs, shape_cases
    from .verify import exported_models, reference_for
    from .wrapper import build_wrapper

    options.validate()
    repo = Path(options.repository)
    target = exported_models(repo, [options.model])[0]
    meta = target.metadata
    if meta.dtype != "float32" or meta.format != "torchscript":
        raise TeiExportError(f"bench compares against a float32 TorchScript export, and {options.model} is "
                             f"{meta.dtype} {meta.format}",
                             fix="pass --model with the name of a float32 TorchScript export (a pt2 or bf16 export of "
                                 "the same source in the repository is measured beside it)",
                             where=str(target.model_dir))
    torch.set_num_threads(options.threads)
    _say(progress, f"measuring the machine's fp32 matmul limit on {options.threads} threads")
    machine = machine_info(options.threads, options.quick)
    peak = machine["matmul_gflop_per_s"]["fp32"]

    _say(progress, f"loading {options.model}: eager sentence-transformers, TorchScript, tokenizer")
    reference = reference_for(meta)
    encoder = encoder_of(reference)
    flop = FlopModel.of(encoder)
    tokenizer = load_tokenizer(target.version_dir, meta.tokenizer_dir)
    names = tuple(meta.input_names)
    workloads = build_workloads(tokenizer, meta.max_seq_len, options)
    expected = {w: reference.encode(t, convert_to_numpy=True, normalize_embeddings=False).astype(np.float64)
                for w, t in workloads.items()}
    report = BenchReport(
        options={k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()},
        machine=machine,
        model={"name": options.model, "source": meta.source, "max_seq_len": meta.max_seq_len,
               "pooling": meta.pooling, "normalize": meta.normalize, "matmul_params": flop.matmul_params,
               "layers": flop.layers, "hidden": flop.hidden},
        workloads={w: {"texts": len(t), "mean_tokens": float(np.mean([min(count_tokens(tokenizer, x), meta.max_seq_len)
                                                                        for x in t]))}
                   for w, t in workloads.items()},
    )

    # -- in-process modes ---------------------------------------------------------------------------------------
    fns: dict[str, Callable] = {}
    report.modes.append(ModeInfo(EAGER, "measured", "SentenceTransformer forward on the same token tensors"))
    fns[EAGER] = lambda *t: reference(dict(zip(names, t)))["sentence_embedding"]
    fns[TS_FP32] = torch.jit.load(str(target.version_dir / "model.pt"))
    report.modes.append(ModeInfo(TS_FP32, "measured", f"{target.version_dir / 'model.pt'}"))
    spec = read_spec(meta.source_path if Path(meta.source_path).is_dir() else meta.source,
                     SpecOverrides(meta.pooling, meta.normalize, meta.max_seq_len))
    cases = shape_cases(16, meta.max_seq_len)
    example = make_inputs(next(c for c in cases if c.padding != "none"), names, spec.vocab_size,
                          tokenizer.pad_token_id or 0, torch.int64)
    if options.bf16:
        try:
            fns[TS_BF16], detail = _bf16_module(repo, meta, reference, spec, example)
            report.modes.append(ModeInfo(TS_BF16, "measured", detail))
        except Exception as err:
            report.modes.append(ModeInfo(TS_BF16, f"error: {type(err).__name__}: {err}"))
    else:
        report.modes.append(ModeInfo(TS_BF16, "not measured: --no-bf16"))
    # the fp32 wrapper that trace exports: the ONNX export and a pt2 compiled here start from it
    wrapper = build_wrapper(encoder, names, spec.pooling, spec.normalize)
    scratch = tempfile.TemporaryDirectory(prefix="tei-export-bench-")
    if options.pt2:
        try:
            _say(progress, "loading or compiling the AOTInductor model.pt2")
            fns[PT2_FP32], detail = _pt2_module(repo, meta, wrapper, spec, example, Path(scratch.name))
            report.modes.append(ModeInfo(PT2_FP32, "measured", detail))
        except Exception as err:
            report.modes.append(ModeInfo(PT2_FP32, f"error: {type(err).__name__}: {str(err)[:200]}"))
    else:
        report.modes.append(ModeInfo(PT2_FP32, "not measured: --no-pt2"))
    if options.onnx:
        try:
            from .onnx_export import OnnxRuntimeModel, export_onnx

            _say(progress, "exporting the same wrapper to ONNX")
            path = export_onnx(wrapper, example, Path(scratch.name) / "model.onnx")
            fns[ORT_FP32] = OnnxRuntimeModel(path, options.threads)
            report.modes.append(ModeInfo(ORT_FP32, "measured", "torch.onnx.export of the traced wrapper, "
                                         "onnx.checker ok, CPUExecutionProvider"))
        except Exception as err:
            report.modes.append(ModeInfo(ORT_FP32, f"error: {type(err).__name__}: {str(err)[:200]}"))
    else:
        report.modes.append(ModeInfo(ORT_FP32, "not measured: --no-onnx"))

    total_in = len(fns) * len(workloads) * len(options.batches)
    k = 0
    for workload, texts in workloads.items():
        done_batches: set[int] = set()
        for batch in options.batches:
            eff = min(batch, len(texts))  # a workload smaller than the batch runs as one batch, measured once
            if eff in done_batches:
                k += len(fns)
                continue
            done_batches.add(eff)
            chunks = _chunks(tokenizer, texts, eff, meta.max_seq_len, names)
            for mode, fn in fns.items():
                k += 1
                tol = tolerance_for("bfloat16" if mode == TS_BF16 else "float32")
                cell = Cell(mode, workload, eff, 1)
                try:
                    _measure_in_process(fn, chunks, expected[workload], tol, flop, peak, options, cell)
                except Exception as err:
                    cell.error = f"{type(err).__name__}: {first_line(err, 200)}"
                report.cells.append(cell)
                _say(progress, _cell_line(k, total_in, cell))
    scratch.cleanup()

    # -- served modes -------------------------------------------------------------------------------------------
    if options.server:
        backends = _served_backends(options)
        for backend in backends:
            suffix = COMPAT_SUFFIX if backend == "compat" and len(backends) > 1 else ""
            _serve_and_measure(report, options, repo, target, tokenizer, workloads, expected, flop, peak, progress,
                               backend, suffix)
    else:
        for mode in SERVER_MODES:
            report.modes.append(ModeInfo(mode, "not measured: --no-server"))
    _measure_infinity(report, options, target, tokenizer, workloads, expected, flop, peak, progress)

    for m in report.modes:
        cells = [c for c in report.cells if c.mode == m.mode and c.error is None]
        if cells:
            m.parity_passed = all(c.parity is not None and c.parity.passed for c in cells)
        errors = [c for c in report.cells if c.mode == m.mode and c.error]
        if errors and m.status == "measured":
            m.detail = (m.detail + "; " if m.detail else "") + f"{len(errors)} cell(s) failed: {errors[0].error}"
    _fill_ratios(report)
    report.targets = _targets(report)
    return report


def _cell_line(k: int, total: int, c: Cell) -> str:
    where = f"batch {c.batch}" if c.mode in IN_PROCESS_MODES else f"concurrency {c.concurrency}"
    if c.error:
        return f"[{k}/{total}] {c.mode} {c.workload} {where}: error {c.error}"
    ok = "ok" if c.parity and c.parity.passed else "PARITY FAIL"
    return (f"[{k}/{total}] {c.mode} {c.workload} {where}: {c.seq_per_s:.1f} seq/s, p95 {c.p95_ms:.1f} ms, "
            f"parity {ok} (min cos {c.parity.min_cosine:.6f})")


def _served_backends(options: BenchOptions) -> tuple[str, ...]:
    """The backends to serve with: as asked, else NVIDIA's (when the server has it or it was built) and the
    compatibility backend, side by side."""
    if options.backends:
        return tuple(options.backends)
    from .triton.backends import resolve
    from .triton.binary import find_tritonserver

    try:
        nvidia = not resolve(find_tritonserver(), "auto").compat
    except TeiExportError:
        nvidia = False
    return ("nvidia", "compat") if nvidia else ("compat",)


def _serve_and_measure(report, options, repo, target, tokenizer, workloads, expected, flop, peak, progress,
                       backend: str = "compat", suffix: str = ""):
    from .triton.server import TritonServer
    from .triton_client import TritonClient

    grpc_mode, http_mode, text_mode = GRPC + suffix, HTTP + suffix, TEXT_GRPC + suffix
    name = options.model
    text_name = f"{name}_text"
    has_text = (repo / text_name).is_dir()
    server = None
    if has_text:
        _say(progress, f"starting tritonserver on {repo} with the {backend} backend (all models, {text_name} "
                       "included)")
        try:
            server = TritonServer(repo, backend=backend).start()
        except ServerError as err:
            report.modes.append(ModeInfo(text_mode, f"error: the server did not load {text_name}: "
                                         f"{first_line(err, 300)}"))
            has_text = False
    if server is None:
        _say(progress, f"starting tritonserver on {repo} with the {backend} backend (model {name} only)")
        try:
            server = TritonServer(repo, model_control_mode="explicit", load_models=[name], backend=backend).start()
        except ServerError as err:
            for mode in (grpc_mode, http_mode):
                report.modes.append(ModeInfo(mode, f"error: {first_line(err, 300)}"))
            if not has_text and report.mode(text_mode) is None:
                report.modes.append(ModeInfo(text_mode, f"not measured: {text_name} not present in the repository"))
            return
    try:
        described = f"{server.binary.describe()}; {server.backends.describe()}"
        report.server = f"{report.server} | {described}" if report.server else described
        with TritonClient(server.grpc_url, "grpc") as admin:
            served = admin.model(name)
            served_text = admin.model(text_name) if has_text else None
        names = [t.name for t in served.inputs]
        dtype = served.inputs[0].numpy_dtype
        output = served.outputs[0].name
        tol = tolerance_for(target.metadata.dtype, target.metadata.device)
        threads = re.findall(r'key:\s*"(\w*THREAD_COUNT)"\s*value:\s*\{\s*string_value:\s*"(\d+)"',
                             (target.model_dir / "config.pbtxt").read_text())
        detail = (f"{server.served_by(name)}; token inputs, one text per request, client-side tokenization (not timed), "
                  f"padded to "
                  f"lengths {'/'.join(map(str, options.buckets))} at concurrency > 1; config "
                  f"{', '.join(f'{k}={v}' for k, v in threads)}; the server and this load generator share "
                  f"the machine's cores")
        report.modes.append(ModeInfo(grpc_mode, "measured", detail))
        report.modes.append(ModeInfo(http_mode, "measured", detail))
        plan = [(grpc_mode, "grpc", server.grpc_url), (http_mode, "http", server.http_url)]
        if served_text is not None:
            report.modes.append(ModeInfo(text_mode, "measured", f"{text_name}: texts in, tokenized on the server; "
                                         f"{name} on the {server.served_by(name)}"))
            plan.append((text_mode, "grpc", server.grpc_url))
        elif report.mode(text_mode) is None:
            report.modes.append(ModeInfo(text_mode, f"not measured: {text_name} not present in the repository"))
        total = len(plan) * len(workloads) * len(options.concurrencies)
        k = 0
        for workload, texts in workloads.items():
            single = [encode_batch(tokenizer, [t], target.metadata.max_seq_len, names, dtype) for t in texts]
            bucketed = [encode_batch(tokenizer, [t], target.metadata.max_seq_len, names, dtype,
                                     tuple(options.buckets))
                        for t in texts]
            for concurrency in options.concurrencies:
                token_requests = bucketed if concurrency > 1 else single
                costs = [(int(r["attention_mask"].sum()), r["attention_mask"].shape[1]) for r in token_requests]
                for mode, protocol, url in plan:
                    k += 1
                    cell = Cell(mode, workload, 1, concurrency)
                    if mode == text_mode:
                        requests = [_text_request(served_text, t) for t in texts]
                        out = served_text.outputs[0].name
                        text_costs = [(c[0], c[0]) for c in costs]
                        _served_cell(cell, url, protocol, text_name, requests, text_costs, out, expected[workload],
                                     tol, flop, peak, options)
                    else:
                        _served_cell(cell, url, protocol, name, token_requests, costs, output, expected[workload],
                                     tol, flop, peak, options)
                    report.cells.append(cell)
                    _say(progress, _cell_line(k, total, cell))
                    if cell.error:  # a dead server ends the bench with how it ended, not an error per cell
                        server.check_running(f"while bench measured {mode} ({workload})", grace=1.0)
    finally:
        _say(progress, "stopping tritonserver")
        server.stop()


# ---------------------------------------------------------------------------------------------------------------
# The plot
# ---------------------------------------------------------------------------------------------------------------
def plot(report: BenchReport, path: Path) -> Path:
    """Throughput (seq/s) against p95 latency, one panel per workload, one line per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = list(report.workloads)
    fig, axes = plt.subplots(1, len(workloads), figsize=(6 * len(workloads), 4.8), squeeze=False)
    modes = [m for m in (*IN_PROCESS_MODES, *SERVER_MODES, *SERVER_MODES_COMPAT, INFINITY)
             if any(c.mode == m for c in report.cells)]
    for ax, workload in zip(axes[0], workloads):
        for mode in modes:
            cells = [c for c in report.cells if c.mode == mode and c.workload == workload and c.error is None]
            if not cells:
                continue
            xs, ys = [c.seq_per_s for c in cells], [c.p95_ms for c in cells]
            style = "o-" if mode in IN_PROCESS_MODES else "s--"
            ax.plot(xs, ys, style, label=mode)
            for c, x, y in zip(cells, xs, ys):
                ax.annotate(f"b{c.batch}" if mode in IN_PROCESS_MODES else f"c{c.concurrency}", (x, y),
                            fontsize=7, textcoords="offset points", xytext=(3, 3))
        ax.set_title(f"{report.model.get('name')}: {workload} ({report.workloads[workload]['texts']} texts)")
        ax.set_xlabel("throughput (seq/s)")
        ax.set_ylabel("p95 latency per call (ms)")
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{report.machine.get('cpu', '')} - {report.options.get('threads')} threads "
                 f"(in-process: b = batch; served: c = concurrency, 1 text/request)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return Path(path)
