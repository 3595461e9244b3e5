"""`tei-export verify`: what Triton returns, over HTTP and gRPC, against eager sentence-transformers.

For each exported model the harness reads the config from the server, tokenizes a corpus with the model's own
tokenizer, sends it at several batch sizes and concurrency levels (padded to length buckets under concurrency so
the dynamic batcher really merges requests), and compares every returned row with ``SentenceTransformer.encode``.
A ``--precision bf16|int8`` export is compared twice, and must pass both: with fp32 eager under the quality gate it
recorded, and with its own model.pt run in process under the fp32 bound (:mod:`.own_module`).
"""
from __future__ import annotations

import sys
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import VerificationError, first_line
from ..export.metadata import ExportMetadata
from ..export.precision import served_tolerance
from ..export.reader import ExportedModel, exported_models, resolve_name
from ..tokens import TextRequestBuilder, request_builder
from ..triton.backends import NVIDIA_LABEL, served_by
from ..triton.hazards import interop_hazards
from ..triton.server_log import error_summary, lost_stub_message, unhealthy_stub
from ..triton_client import PROTOCOLS, ServedModel, TritonClient, send_requests
from .corpus import CorpusItem, build_corpus
from .own_module import EAGER, MERGE_NOTE, OwnModule, Reference, is_lossy, merge_dependent
from .parity import Tolerance, compare

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Run:
    """One way of sending the corpus: texts per request and requests in flight."""

    batch: int
    concurrency: int

    @property
    def label(self) -> str:
        return f"batch {self.batch} x concurrency {self.concurrency}"


DEFAULT_RUNS = (Run(1, 1), Run(4, 2), Run(16, 1), Run(1, 8))
# A ragged export takes one text per request; what varies is how many requests Triton merges (concurrency).
RAGGED_RUNS = (Run(1, 1), Run(1, 4), Run(1, 16), Run(1, 64))


@dataclass(frozen=True)
class Comparison:
    """A run's served rows against one reference (fp32 eager, or a lossy export's own module) and its bound."""

    reference: str  # own_module.EAGER or own_module.OWN
    max_abs_diff: float
    min_cosine: float
    tolerance: Tolerance

    @property
    def passed(self) -> bool:
        return self.tolerance.accepts(self.max_abs_diff, self.min_cosine)


@dataclass
class RunResult:
    label: str
    requests: int
    texts: int
    comparisons: list[Comparison]  # fp32 eager first; a lossy export's own module second
    seconds: float

    @property
    def passed(self) -> bool:
        return bool(self.comparisons) and all(c.passed for c in self.comparisons)

    @property
    def max_abs_diff(self) -> float:
        """Against fp32 eager, as for every export."""
        return self.comparisons[0].max_abs_diff

    @property
    def min_cosine(self) -> float:
        return self.comparisons[0].min_cosine


@dataclass
class ModelCheck:
    model: str
    protocol: str
    texts: int = 0
    runs: list[RunResult] = field(default_factory=list)
    # Triton's statistics over this check: inference_count counts batch rows (here texts) when the model batches,
    # and one per request with max_batch_size 0; execution_count counts forward() calls.
    inferences: int = 0
    executions: int = 0
    worst_text: str | None = None
    error: str | None = None
    kind: str = "tokens"  # "tokens": client-side tokenization; "text": UTF-8 strings to the <name>_text ensemble
    batching: bool = True  # False for max_batch_size 0 (pt2): each request is one execution by design
    served_by: str = ""  # the backend that computed the embeddings, as the server reports the model's config
    references: list[Reference] = field(default_factory=list)  # what the runs were compared with, in order
    note: str | None = None  # a limit of the comparisons, said in the report (own_module.MERGE_NOTE)

    @property
    def passed(self) -> bool:
        return self.error is None and bool(self.runs) and all(r.passed for r in self.runs)

    @property
    def requests(self) -> int:
        """Requests sent over all runs (the table's "requests" column summed)."""
        return sum(r.requests for r in self.runs)

    @property
    def texts_sent(self) -> int:
        """Texts sent over all runs; ``texts`` is the corpus size, sent once per run."""
        return sum(r.texts for r in self.runs)

    @property
    def max_abs_diff(self) -> float:
        return max((r.max_abs_diff for r in self.runs), default=float("nan"))

    @property
    def min_cosine(self) -> float:
        return min((r.min_cosine for r in self.runs), default=float("nan"))

    def against(self, reference: str) -> list[Comparison]:
        """Every run's comparison with ``reference`` (own_module.EAGER or OWN); empty when not compared."""
        return [c for r in self.runs for c in r.comparisons if c.reference == reference]


@dataclass
class VerifyReport:
    server: str
    checks: list[ModelCheck] = field(default_factory=list)
    libtorch: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # repository settings that crash some backend releases

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks) and \
            all(r.get("ok") or r.get("skipped") for r in self.libtorch)

    def to_dict(self) -> dict:
        return {"passed": self.passed, "server": self.server, "warnings": self.warnings,
                "checks": [{**asdict(c), "runs": [_run_dict(r) for r in c.runs], "passed": c.passed,
                            "max_abs_diff": c.max_abs_diff, "min_cosine": c.min_cosine, "requests": c.requests,
                            "texts_sent": c.texts_sent}
                           for c in self.checks],
                "libtorch": self.libtorch}

    def table(self) -> str:
        rows = [("model", "protocol", "run", "requests", "texts", "against", "max|diff|", "min cos", "ok")]
        for c in self.checks:
            if c.error:
                rows.append((c.model, c.protocol, "error", "", "", "", "", "", "FAIL"))
                continue
            for r in c.runs:
                for i, k in enumerate(r.comparisons):  # a lossy export's second reference on a row of its own
                    run = (c.model, c.protocol, r.label, str(r.requests), str(r.texts)) if i == 0 else ("",) * 5
                    rows.append((*run, k.reference, f"{k.max_abs_diff:.2e}", f"{k.min_cosine:.7f}",
                                 "ok" if k.passed else "FAIL"))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = [f"server: {self.server}"]
        lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
        served = {c.model: c.served_by for c in self.checks if c.served_by}
        lines += [f"{model} served by {who}" for model, who in served.items()]
        bounds = {(c.model, ref.name): ref for c in self.checks for ref in c.references}
        lines += [f"{model} against {name} ({ref.describe}): {ref.tolerance.describe()}"
                  for (model, name), ref in bounds.items()]
        for c in self.checks:
            if c.note:
                lines.append(f"{c.model} over {c.protocol}: {c.note}")
            if c.error:
                lines.append(f"{c.model} over {c.protocol}: {c.error}")
            elif c.inferences and not c.batching:
                lines.append(f"{c.model} over {c.protocol}: max_batch_size 0, no dynamic batching: {c.requests} "
                             f"requests ({c.texts_sent} texts) in {c.executions} executions")
            elif c.inferences:
                lines.append(f"{c.model} over {c.protocol}: dynamic batching ran {c.requests} requests "
                             f"({c.inferences} texts) in {c.executions} executions "
                             f"({c.requests / max(c.executions, 1):.1f} requests per execution)")
        for r in self.libtorch:
            if r.get("skipped"):
                lines.append(f"libtorch C++ check of {r['model']}: skipped ({r.get('skip_reason')})")
            else:
                lines.append(f"libtorch C++ check of {r['model']}: {'ok' if r.get('ok') else 'FAIL'} "
                             f"max|diff| {r.get('max_abs_diff', float('nan')):.2e} "
                             f"min cos {r.get('min_cosine', float('nan')):.7f}")
        lines.append("verdict: " + ("PASS" if self.passed else "FAIL"))
        return "\n".join(lines)


def _run_dict(run: RunResult) -> dict:
    return {**asdict(run), "passed": run.passed, "max_abs_diff": run.max_abs_diff, "min_cosine": run.min_cosine,
            "comparisons": [{**asdict(c), "passed": c.passed} for c in run.comparisons]}


def references(model: ExportedModel, text_model: Path | None = None) -> tuple[list[Reference], OwnModule | None]:
    """What ``model``'s served rows (or its ``text_model``'s) are compared with: fp32 eager under the bound
    served_tolerance gives (its recorded quality gate for a lossy export), and for a lossy export its own module
    too (fp32 bound)."""
    eager = Reference(EAGER, "sentence-transformers in fp32", served_tolerance(model.metadata))
    if not is_lossy(model):
        return [eager], None
    own = OwnModule(model)
    return [eager, own.reference(text_model)], own


def request_rows(served: ServedModel) -> int:
    """The most texts one request may carry: max_batch_size, or with max_batch_size 0 (a pt2 export) any number
    when the first dim is variable, since the batch is then part of the request's own shape."""
    if served.max_batch_size > 0:
        return served.max_batch_size
    return sys.maxsize if served.inputs and served.inputs[0].dims[:1] == (-1,) else 1


def _split(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _error_text(err: Exception) -> str:
    """A failed check's error: the first line, and the exception a TorchScript traceback ends with."""
    return f"{type(err).__name__}: {error_summary(str(err)) or first_line(err)}"


def _send_run(url: str, protocol: str, served: ServedModel, texts: list[str], tokenizer, meta: ExportMetadata,
              run: Run, timeout_s: float) -> tuple[np.ndarray, list[dict[str, np.ndarray]]]:
    """Send ``texts`` as requests of ``run.batch`` texts with ``run.concurrency`` in flight: the rows in text order,
    and the requests as sent (a lossy export's own module is run on exactly those)."""
    output = served.outputs[0].name
    build = request_builder(meta, tokenizer, served, run.concurrency > 1)
    requests = [build([texts[i] for i in chunk]) for chunk in _split(list(range(len(texts))), run.batch)]
    parts = send_requests(lambda: TritonClient(url, protocol, timeout_s), served.name, requests, output,
                          run.concurrency)
    return np.concatenate(parts, axis=0), requests


def _record_run(check: ModelCheck, label: str, batch: int, items: list[CorpusItem], expected: list[np.ndarray],
                got: np.ndarray, started: float) -> None:
    """One run's result on ``check``, against each of ``check.references`` (``expected``: their rows, in the same
    order); the first failing run names the text that differed most from the reference it failed."""
    comparisons = [Comparison(ref.name, *compare(rows, got), ref.tolerance)
                   for ref, rows in zip(check.references, expected)]
    check.runs.append(RunResult(label, -(-len(items) // batch), len(items), comparisons,
                                time.monotonic() - started))
    failed = [(c, rows) for c, rows in zip(comparisons, expected) if not c.passed]
    if failed and check.worst_text is None:
        comparison, rows = failed[0]
        worst = int(np.abs(np.asarray(got, np.float64) - rows).max(axis=1).argmax())
        check.worst_text = f"{items[worst].kind}: {items[worst].text[:80]!r} (against {comparison.reference})"


def verify_model(url: str, protocol: str, model: ExportedModel, items: list[CorpusItem], expected: np.ndarray,
                 tokenizer, runs=DEFAULT_RUNS, timeout_s: float = 120.0,
                 nvidia_label: str = NVIDIA_LABEL) -> ModelCheck:
    check = ModelCheck(model.name, protocol, texts=len(items))
    texts = [i.text for i in items]
    check.references, own = references(model)
    merged = own is not None and merge_dependent(model)
    check.note = MERGE_NOTE if merged else None
    try:
        with TritonClient(url, protocol, timeout_s) as admin:
            served = admin.model(model.name)
            check.served_by = served_by(served.backend, served.runtime, served.platform, nvidia_label)
            check.batching = served.max_batch_size > 0
            ragged = model.variant == "ragged"
            before = admin.statistics(model.name)
            plan = RAGGED_RUNS if ragged and runs is DEFAULT_RUNS else runs
            for run in plan:
                batch = 1 if ragged else min(run.batch, request_rows(served))
                started = time.monotonic()
                got, sent = _send_run(url, protocol, served, texts, tokenizer, model.metadata,
                                      Run(batch, run.concurrency), timeout_s)
                compared = own is not None and own.compares(merged, run.concurrency, batch)
                wanted = [expected] + ([own.token_rows(sent)] if compared else [])
                _record_run(check, Run(batch, run.concurrency).label, batch, items, wanted, got, started)
            after = admin.statistics(model.name, at_least=before[0] + len(texts) * len(plan))
            check.inferences, check.executions = after[0] - before[0], after[1] - before[1]
    except Exception as err:  # a server or protocol failure is a failed check, reported, not a crash
        check.error = _error_text(err)
    return check


def verify_text_model(url: str, protocol: str, model: ExportedModel, items: list[CorpusItem], expected: np.ndarray,
                      runs=DEFAULT_RUNS, timeout_s: float = 120.0, nvidia_label: str = NVIDIA_LABEL) -> ModelCheck:
    """The corpus as UTF-8 strings (BYTES) to ``<name>_text``, compared with the same ``expected`` rows."""
    name = f"{model.name}_text"
    check = ModelCheck(name, protocol, texts=len(items), kind="text")
    texts = [i.text for i in items]
    text_dir = model.model_dir.parent / name
    check.references, own = references(model, text_dir)
    merged = own is not None and merge_dependent(model, text_dir)
    check.note = MERGE_NOTE if merged else None
    try:
        with TritonClient(url, protocol, timeout_s) as admin:
            served = admin.model(name)
            token_model = admin.model(model.name)
            token_side = served_by(token_model.backend, token_model.runtime, token_model.platform, nvidia_label)
            # A graph text model (pytorch_libtorch) tokenizes and encodes itself: its own statistics count the texts.
            graph = served.platform == "pytorch_libtorch"
            counted = name if graph else model.name
            text_side = served_by(served.backend, served.runtime, served.platform, nvidia_label)
            check.served_by = (f"ensemble: {model.name}_tokenizer on the Python backend, then {model.name} on the "
                               f"{token_side}" if served.platform == "ensemble" else
                               f"{name} on the {text_side} (tokenizer and encoder in one TorchScript model"
                               f"{', no Python' if text_side == nvidia_label else ''})" if graph else
                               f"{name} on the Python backend (one request per text to {model.name}), then "
                               f"{model.name} on the {token_side}")
            output = served.outputs[0].name
            build = TextRequestBuilder(served.inputs[0].name)
            before = admin.statistics(counted)
            for run in runs:
                batch = min(run.batch, request_rows(served))
                chunks = [[texts[i] for i in chunk] for chunk in _split(list(range(len(texts))), batch)]
                requests = [build(chunk) for chunk in chunks]
                started = time.monotonic()
                got = np.concatenate(send_requests(lambda: TritonClient(url, protocol, timeout_s), name, requests,
                                                   output, run.concurrency), axis=0)
                compared = own is not None and own.compares(merged, run.concurrency, batch)
                wanted = [expected] + ([own.text_rows(text_dir, chunks)] if compared else [])
                _record_run(check, "text, " + Run(batch, run.concurrency).label, batch, items, wanted, got,
                            started)
            after = admin.statistics(counted, at_least=before[0] + len(texts) * len(runs))
            check.inferences, check.executions = after[0] - before[0], after[1] - before[1]
    except Exception as err:  # reported as a failed check, not a crash
        check.error = _error_text(err)
    return check


def explain_failure(check: ModelCheck, server=None) -> None:
    """Name the model that failed and why, when a check failed on a Python backend stub that is gone (the
    tokenizer of a text ensemble, or any model the compatibility backend serves): the request error names only the
    stub's instance. With our own ``server``, its record of the stub adds the process."""
    found = unhealthy_stub(check.error or "")
    if found is None:
        return
    instance, model, ensemble = found
    pid = None
    if server is not None:
        lost = {stub.instance: stub for stub in server.lost_stubs()}
        if instance in lost:
            model, pid = lost[instance].model, lost[instance].pid
    check.error = (lost_stub_message(model, instance, pid, ensemble)
                   + ". Fix: restart the server (a new one starts every stub again)")


def _watch(server, check: ModelCheck) -> None:
    """After a check on our own server: a server that died fails the whole verify (raised, naming how it ended
    and its log), a lost stub is named in the check."""
    if server is None:
        explain_failure(check)
        return
    server.check_running(f"while verify sent {check.model} requests over {check.protocol}",
                         grace=1.0 if check.error else 0.0)
    explain_failure(check, server)


def _text_ready(url: str, protocol: str, name: str) -> bool:
    try:
        with TritonClient(url, protocol) as c:
            return f"{name}_text" in c.ready_models()
    except Exception:
        return False


def _libtorch_reports(targets: list[ExportedModel], wanted: dict[str, set[str]],
                      progress: Progress | None) -> list[dict]:
    """The C++ check of every token model, and of every graph text model whose text check was wanted (forward()
    called with a List[str])."""
    from .libtorch_check import check_libtorch

    reports = []
    for m in targets:
        folders = [m.model_dir] + ([m.text_dir] if "text" in wanted[m.name] and m.graph_text else [])
        for folder in folders:
            if progress:
                progress(f"libtorch C++ check of {folder.name}")
            report = check_libtorch(folder, min_cosine=served_tolerance(m.metadata).min_cosine)
            reports.append({"model": folder.name, **asdict(report)})
    return reports


TEXT_SUFFIX = "_text"


def checks_wanted(repo: Path, names: list[str] | None) -> tuple[list[ExportedModel], dict[str, set[str]]]:
    """The exported models to check and, per model, which of its checks: "token" (NAME) and "text" (NAME_text, its
    text model), as the report names them. A name that is neither is an error that lists the names there are."""
    everything = exported_models(repo)
    if not names:
        return everything, {m.name: {"token", "text"} for m in everything}
    wanted: dict[str, set[str]] = {}
    for name in names:
        model, text = resolve_name(repo, name, everything)
        wanted.setdefault(model.name, set()).add("text" if text else "token")
    return [m for m in everything if m.name in wanted], wanted


def verify_repository(repo: Path, url: str | None = None, protocols: tuple[str, ...] = PROTOCOLS,
                      names: list[str] | None = None, corpus_size: int = 48, runs=DEFAULT_RUNS,
                      libtorch: bool = True, server_options: dict | None = None,
                      progress: Progress | None = None) -> VerifyReport:
    """Verify every exported model of ``repo`` on the server at ``url`` (or on one started here and stopped)."""
    targets, wanted = checks_wanted(Path(repo), names)
    if url is not None and len(protocols) != 1:
        raise VerificationError("--url names one endpoint, so it needs one protocol",
                                fix="add --protocol http or --protocol grpc")
    server = None
    with ExitStack() as stack:
        if url is None:
            from ..triton.server import TritonServer

            if progress:
                progress(f"starting tritonserver on {repo}")
            server = stack.enter_context(TritonServer(repo, **(server_options or {})))
            urls = {"http": server.http_url, "grpc": server.grpc_url}
            description = "; ".join(filter(None, (server.binary.describe(), server.backends.describe(),
                                                  server.view.describe())))
            warnings, nvidia_label = server.warnings, server.backends.nvidia_label
        else:
            urls = {protocols[0]: url}
            try:
                with TritonClient(url, protocols[0]) as c:
                    description = f"Triton {c.server_version()} at {url}"
            except Exception as err:  # refused, a name that does not resolve, the other protocol's port
                raise VerificationError(f"no Triton answers at {url} over {protocols[0]}: {first_line(err, 200)}",
                                        fix="start one (tei-export serve REPOSITORY prints its addresses), or check "
                                            "--url and --protocol (HTTP port: http://HOST:PORT; gRPC: HOST:PORT)"
                                        ) from None
            warnings, nvidia_label = interop_hazards(Path(repo)), NVIDIA_LABEL
        report = VerifyReport(server=description, warnings=list(warnings))
        for model in targets:
            tokenizer = model.tokenizer()
            items = build_corpus(corpus_size, tokenizer=tokenizer, max_seq_len=model.metadata.max_seq_len)
            if progress:
                progress(f"{model.name}: eager sentence-transformers on {len(items)} texts")
            reference = model.reference()
            expected = reference.encode([i.text for i in items]).astype(np.float64)
            text_expected = None  # encode() with the text model's own prompt, once the text model is checked
            for protocol in protocols:
                if progress:
                    progress(f"{model.name}: requests over {protocol}")
                if "token" in wanted[model.name]:
                    report.checks.append(verify_model(urls[protocol], protocol, model, items, expected, tokenizer,
                                                      runs, nvidia_label=nvidia_label))
                    _watch(server, report.checks[-1])
                if "text" in wanted[model.name] and (_text_ready(urls[protocol], protocol, model.name)
                                                     or names and f"{model.name}{TEXT_SUFFIX}" in names):
                    if progress:
                        progress(f"{model.name}_text: text requests over {protocol}")
                    if text_expected is None:
                        text_expected = model.text_rows(reference, [i.text for i in items]).astype(np.float64)
                    report.checks.append(verify_text_model(urls[protocol], protocol, model, items, text_expected,
                                                           runs, nvidia_label=nvidia_label))
                    _watch(server, report.checks[-1])
        if libtorch:
            report.libtorch = _libtorch_reports(targets, wanted, progress)
    return report
