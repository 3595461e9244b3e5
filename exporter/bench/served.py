"""Triton's served modes: the exported model behind a real tritonserver, on each LibTorch backend asked for."""
from __future__ import annotations

import re

from ..checks.parity import tolerance_for
from ..errors import ServerError, TeiExportError, first_line
from ..tokens import encode_batch
from .load import served_cell, text_request
from .modes import GRPC, GRPC_RAGGED, HTTP, TEXT_GRPC
from .options import BenchOptions
from .report import Cell, ModeInfo, cell_line, say


def served_backends(options: BenchOptions) -> tuple[str, ...]:
    """The backends to serve with: as asked, else NVIDIA's (when the server has it or it was built) and the
    compatibility backend, side by side."""
    if options.backends:
        return tuple(options.backends)
    from ..triton.backends import resolve
    from ..triton.binary import find_tritonserver

    try:
        nvidia = not resolve(find_tritonserver(), "auto").compat
    except TeiExportError:
        nvidia = False
    return ("nvidia", "compat") if nvidia else ("compat",)


def serve_and_measure(report, options, repo, target, tokenizer, workloads, expected, flop, peak, progress,
                       backend: str = "compat", suffix: str = ""):
    from ..triton.server import TritonServer
    from ..triton_client import TritonClient
    from .in_process import sibling_export

    grpc_mode, http_mode, text_mode = GRPC + suffix, HTTP + suffix, TEXT_GRPC + suffix
    ragged_mode = GRPC_RAGGED + suffix
    name = options.model
    text_name = f"{name}_text"
    has_text = (repo / text_name).is_dir()
    ragged = sibling_export(repo, target.metadata, "float32", "ragged")
    server = None
    if has_text:
        say(progress, f"starting tritonserver on {repo} with the {backend} backend (all models, {text_name} "
                       "included)")
        try:
            server = TritonServer(repo, backend=backend).start()
        except ServerError as err:
            report.modes.append(ModeInfo(text_mode, f"error: the server did not load {text_name}: "
                                         f"{first_line(err, 300)}"))
            has_text = False
    if server is None:
        say(progress, f"starting tritonserver on {repo} with the {backend} backend (model {name} only)")
        try:
            server = TritonServer(repo, model_control_mode="explicit",
                                  load_models=[name] + ([ragged.name] if ragged else []), backend=backend).start()
        except ServerError as err:
            for mode in (grpc_mode, http_mode):
                report.modes.append(ModeInfo(mode, f"error: {first_line(err, 300)}"))
            if not has_text and report.mode(text_mode) is None:
                report.modes.append(ModeInfo(text_mode, f"not measured: {text_name} not present in the repository"))
            return
    try:
        described = server.describe()
        report.server = f"{report.server} | {described}" if report.server else described
        with TritonClient(server.grpc_url, "grpc") as admin:
            served = admin.model(name)
            served_text = admin.model(text_name) if has_text else None
            # the ragged export's own input type: it may be --int32 where the padded one is not, or the reverse
            ragged_dtype = admin.model(ragged.name).inputs[0].numpy_dtype if ragged and ragged.name in server.models \
                else None
        names = [t.name for t in served.inputs]
        dtype = served.inputs[0].numpy_dtype
        output = served.outputs[0].name
        tol = tolerance_for(target.metadata.dtype, target.metadata.device)
        threads = re.findall(r'key:\s*"(\w*THREAD_COUNT)"\s*value:\s*\{\s*string_value:\s*"(\d+)"',
                             (target.model_dir / "config.pbtxt").read_text())
        detail = (f"{server.served_by(name)}; token inputs, one text per request, client-side tokenization "
                  f"(not timed), padded to lengths {'/'.join(map(str, options.buckets))} at concurrency > 1; config "
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
        if ragged is not None and ragged.name in server.models:
            report.modes.append(ModeInfo(ragged_mode, "measured", (
                f"{ragged.name}, the ragged export of the same source ({server.served_by(ragged.name)}): one "
                f"unpadded text per request [1, L], input_ids only, Triton merging any lengths; token budget "
                f"{ragged.metadata.token_budget} per encoder call")))
            plan.append((ragged_mode, "grpc", server.grpc_url))
        elif report.mode(ragged_mode) is None:
            report.modes.append(ModeInfo(ragged_mode, "not measured: no ragged export of the same source in the "
                                         "repository (tei-export trace MODEL --batching ragged --name NAME)"))
        total = len(plan) * len(workloads) * len(options.concurrencies)
        k = 0
        for workload, texts in workloads.items():
            single = [encode_batch(tokenizer, [t], target.metadata.max_seq_len, names, dtype) for t in texts]
            bucketed = [encode_batch(tokenizer, [t], target.metadata.max_seq_len, names, dtype,
                                     tuple(options.buckets))
                        for t in texts]
            unpadded = [encode_batch(tokenizer, [t], target.metadata.max_seq_len, ["input_ids"], ragged_dtype)
                        for t in texts] if ragged_dtype is not None else []
            for concurrency in options.concurrencies:
                token_requests = bucketed if concurrency > 1 else single
                costs = [(int(r["attention_mask"].sum()), r["attention_mask"].shape[1]) for r in token_requests]
                for mode, protocol, url in plan:
                    k += 1
                    cell = Cell(mode, workload, 1, concurrency)
                    if mode == ragged_mode:
                        lengths = [(r["input_ids"].shape[1],) * 2 for r in unpadded]
                        served_cell(cell, url, protocol, ragged.name, unpadded, lengths, output, expected[workload],
                                    tol, flop, peak, options)
                    elif mode == text_mode:
                        requests = [text_request(served_text, t) for t in texts]
                        out = served_text.outputs[0].name
                        text_costs = [(c[0], c[0]) for c in costs]
                        served_cell(cell, url, protocol, text_name, requests, text_costs, out, expected[workload],
                                     tol, flop, peak, options)
                    else:
                        served_cell(cell, url, protocol, name, token_requests, costs, output, expected[workload],
                                     tol, flop, peak, options)
                    report.cells.append(cell)
                    say(progress, cell_line(k, total, cell))
                    if cell.error:  # a dead server ends the bench with how it ended, not an error per cell
                        server.check_running(f"while bench measured {mode} ({workload})", grace=1.0)
    finally:
        say(progress, "stopping tritonserver")
        server.stop()
