"""infinity-emb, a peer embedding server (its own venv), started and stopped here and measured like Triton."""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import torch

from ..checks.corpus import count_tokens
from ..checks.parity import tolerance_for
from ..errors import ServerError, first_line
from .infinity_client import OPENAI, InfinityClient
from .load import served_cell
from .modes import INFINITY
from .report import Cell, ModeInfo, cell_line, say

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

    from ..triton.binary import python_bin_dir

    if path == "":
        return None, "not measured: --no-infinity"
    given = path or os.environ.get(INFINITY_ENV)
    if given:
        where = "--infinity" if path else f"${INFINITY_ENV}"
        found = shutil.which(given)
        return (Path(found), "") if found else (None, f"error: {where} {given} is not an executable file")
    found = shutil.which("infinity_emb", path=os.pathsep.join([str(python_bin_dir()), os.environ.get("PATH", "")]))
    return (Path(found), "") if found else (None, f"not measured: not installed ({INFINITY_INSTALL})")


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
        from ..triton.process import free_port, spawn_server

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
            self._proc = spawn_server(self.command, env, log)
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
        from ..triton.server_log import error_lines, last_lines

        text = self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path else ""
        return error_lines(text, 3) or last_lines(text, 8)

    def stop(self) -> None:
        from ..triton.process import stop_group

        proc, self._proc = self._proc, None
        if proc is not None:
            stop_group(proc, self.pgid, self.stop_timeout)

    def __enter__(self) -> "InfinityServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def measure_infinity(report, options, target, tokenizer, workloads, expected, flop, peak, progress) -> None:
    """infinity-emb on the eager reference's model folder: the concurrency sweep of Triton's cells, same texts,
    same bounded load generator, one text per request, parity against the same rows."""
    from ..export.triton_config import read_config

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
    say(progress, f"starting infinity-emb ({executable}) on {model_dir}")
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
                served_cell(cell, server.url, OPENAI, options.model, texts, costs, "embedding", expected[workload],
                             tol, flop, peak, options)
                report.cells.append(cell)
                say(progress, cell_line(k, total, cell))
    finally:
        say(progress, f"stopping infinity-emb (process group {server.pgid})")
        server.stop()
