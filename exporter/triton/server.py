"""The ``tritonserver`` process: started on free local ports in its own process group, waited on until every model
is READY (or :class:`~exporter.errors.ServerError` with the server's own load error), watched while it serves (a
server that died, a Python backend stub that is gone), stopped with its whole group.
"""
from __future__ import annotations

import atexit
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Mapping, Sequence

from ..errors import ServerError
from .allocator import Allocator, choose_allocator
from .backends import BackendSetup, prepare_backends
from .binary import INSTALL_HINT, TritonBinary, find_tritonserver
from .hazards import explains_abort, interop_hazards
from .openmp import OpenMPWait, choose_openmp_wait
from .ports import choose_ports
from .process import signal_name, spawn_server, stop_group
from .repository_view import RepositoryView, present_repository
from .readiness import by_name, expected_models, load_failures, still_loading
from .server_log import error_lines, last_lines
from .stubs import StubProcess, StubWatch, describe_lost_stub

# Where the compatibility backend's stub processes keep what NVIDIA's backend keeps process-wide (which model set
# the inter-op thread count); a folder per server, removed with it.
COMPAT_STATE_ENV = "TEI_EXPORT_COMPAT_STATE"


def client_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


_LIVE_SERVERS: "set[TritonServer]" = set()
_LIVE_LOCK = threading.Lock()


@atexit.register
def _stop_leftovers() -> None:
    with _LIVE_LOCK:
        servers = list(_LIVE_SERVERS)
    for server in servers:
        try:
            server.stop(timeout=10)
        except Exception:
            pass


class TritonServer:
    """A tritonserver process serving ``model_repository`` (use as a context manager, or ``start()``/``stop()``).

    ``http_url`` and ``grpc_url`` are ``host:port`` strings, the form ``tritonclient`` takes.

    * ``binary``: a :class:`TritonBinary`, a path (see :func:`find_tritonserver`), or None to search.
    * ``host``: address for HTTP and gRPC (and metrics when ``metrics``); ports are picked free unless given, or
      ``preferred_ports`` (e.g. Triton's usual 8000, 8001, 8002, see :mod:`~exporter.triton.ports`) when those are
      free; ``port_note`` then says which of them were taken.
    * ``model_control_mode``: ``none`` (every model loaded at start), ``explicit`` (``load_models``), ``poll``.
    * ``startup_timeout``: seconds to wait until the server and every expected model are READY.
    * ``stop_timeout``: seconds :meth:`stop` waits after SIGTERM before SIGKILL; ``exit_timeout`` is the server's
      own ``--exit-timeout-secs`` (how long it waits for open connections and in-flight requests).
    * ``auto_complete_config``: off by default, as the LibTorch backend has none (and with the compatibility
      backend it would cost one extra torch-importing process per model).
    * ``log_path``: the server's stdout and stderr (and its backend stubs'); a temp file when None.
    * ``backend_config``: ``--backend-config`` values, e.g. ``python,shm-default-byte-size=...``.
    * ``backend``: which LibTorch backend serves pytorch_libtorch models: ``auto``, ``nvidia`` or ``compat`` (see
      :mod:`exporter.triton.backends`); ``backends``: an already prepared :class:`BackendSetup` instead.
    * ``cache_dir``: where assembled backend folders are kept (see :func:`~exporter.triton.backends.prepare_backends`).
    * ``env``: base environment instead of ``os.environ`` (the binary's additions and the venv ``bin`` still apply).
    * ``allocator``: ``jemalloc`` (preloaded, the default) or ``system`` (glibc's malloc); None:
      ``$TEI_EXPORT_ALLOCATOR``, else jemalloc (see :mod:`~exporter.triton.allocator`); ``memory`` then says which the server runs with.
    * ``omp_spin``: start the server with OpenMP spin-waiting that survives several models' thread teams (see
      :mod:`~exporter.triton.openmp`); None: ``$TEI_EXPORT_OMP_SPIN``, else on; ``openmp`` says what was set.
    """

    def __init__(
        self,
        model_repository: str | os.PathLike,
        *,
        binary: TritonBinary | str | os.PathLike | None = None,
        host: str = "127.0.0.1",
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        metrics: bool = False,
        preferred_ports: tuple[int, int, int] | None = None,
        model_control_mode: str = "none",
        load_models: Sequence[str] = (),
        startup_timeout: float = 180.0,
        stop_timeout: float = 30.0,
        exit_timeout: int = 5,
        auto_complete_config: bool = False,
        log_path: str | os.PathLike | None = None,
        log_verbose: int = 0,
        backend_config: Sequence[str] = (),
        backend: str | None = None,
        backends: BackendSetup | None = None,
        cache_dir: str | os.PathLike | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        allocator: str | None = None,
        omp_spin: bool | None = None,
    ):
        self.model_repository = Path(model_repository).absolute()
        self._binary_arg = binary
        self.host = host
        self._ports_given = (http_port, grpc_port, metrics_port)
        self.metrics = metrics
        self.preferred_ports = preferred_ports
        self.port_note: str | None = None  # which preferred ports were taken, and what was used instead
        if model_control_mode not in ("none", "explicit", "poll"):
            raise ServerError(
                f"unknown model control mode '{model_control_mode}'", fix="use one of none, explicit, poll"
            )
        self.model_control_mode = model_control_mode
        self.load_models = tuple(load_models)
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.exit_timeout = exit_timeout
        self.auto_complete_config = auto_complete_config
        self._log_path_arg = Path(log_path) if log_path is not None else None
        self.log_verbose = log_verbose
        self.backend_config = tuple(backend_config)
        self.cache_dir = cache_dir
        self.extra_args = tuple(extra_args)
        self._base_env = env
        self.memory: Allocator = choose_allocator(allocator, env)  # checked here: a wrong name fails before a start
        self.openmp: OpenMPWait = choose_openmp_wait(omp_spin, env)
        self._binary: TritonBinary | None = binary if isinstance(binary, TritonBinary) else None
        self.backend_choice = backend
        self.backends: BackendSetup | None = backends
        self.warnings: list[str] = []  # repository settings that crash some backend releases (see hazards)
        self.view: RepositoryView | None = None  # what --model-repository points at while the server runs
        self._proc: subprocess.Popen | None = None
        self._pgid: int | None = None
        self._exit_code: int | None = None  # how the process ended, kept after stop() for check_running()
        self._stopping = False  # stop() was called: an exit from now on is ours, not a death
        self._ready_log_size = 0  # the log's length when every model was READY: what follows is news
        self._stubs: StubWatch | None = None  # the Python backend stubs, as last seen
        self._log_file = None
        self._log_path: Path | None = None
        self.http_port = self.grpc_port = self.metrics_port = None
        self._models: tuple[str, ...] = ()
        self._compat_state: Path | None = None
        self.command: list[str] = []

    # -- properties -------------------------------------------------------------------------------------------
    @property
    def binary(self) -> TritonBinary | None:
        return self._binary

    @property
    def http_url(self) -> str:
        return f"{client_host(self.host)}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{client_host(self.host)}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str | None:
        return f"http://{client_host(self.host)}:{self.metrics_port}/metrics" if self.metrics else None

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    @property
    def models(self) -> tuple[str, ...]:
        """Names of the models that are READY (as found at startup)."""
        return self._models

    @property
    def compat_backend(self) -> bool:
        return bool(self.backends and self.backends.compat)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def pgid(self) -> int | None:
        return self._pgid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_text(self) -> str:
        if self._log_path is None or not self._log_path.exists():
            return ""
        return self._log_path.read_text(encoding="utf-8", errors="replace")

    # -- lifecycle --------------------------------------------------------------------------------------------
    def __enter__(self) -> "TritonServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "TritonServer":
        if self.running:
            return self
        if not self.model_repository.is_dir():
            raise ServerError(
                "the model repository does not exist",
                fix="export a model first or pass the folder that holds <model>/config.pbtxt",
                where=str(self.model_repository),
            )
        if self.model_control_mode == "none" and not any(
                p.is_dir() and not p.name.startswith(".") for p in self.model_repository.iterdir()):
            # Triton starts on it and reports READY, serving nothing: almost always the wrong folder
            raise ServerError(
                "the model repository holds no model folders: the server would serve nothing",
                fix="pass the folder that holds <model>/config.pbtxt (e.g. the --out of tei-export trace), or "
                    "export a model into this one",
                where=str(self.model_repository),
            )
        if self._binary is None:
            arg = self._binary_arg
            self._binary = find_tritonserver(None if arg is None else str(arg))
        if self.backends is None:
            self.backends = prepare_backends(self._binary, self.backend_choice, self.cache_dir)
        explicit = self.model_control_mode == "explicit" and "*" not in self.load_models
        self.warnings = [*interop_hazards(self.model_repository, list(self.load_models) if explicit else None),
                         *self.backends.notes]
        if self.memory.missing:
            self.warnings.append(f"the server runs on glibc malloc, whose memory creeps under ragged load: "
                                 f"{self.memory.why}")
        attempts = 1 if all(p is not None for p in self._ports_given[:2]) else 3
        for attempt in range(attempts):
            self._launch(self.preferred_ports if attempt == 0 else None)  # a retry: the usual ports were raced
            try:
                self._wait_ready()
                return self
            except _PortInUse as busy:
                self.stop()
                # a port that was given stays taken: only a free port chosen here may have been lost to a race
                taken = {int(p) for p in re.findall(r":(\d+)' already in use", str(busy))}
                if attempt + 1 == attempts or taken & {p for p in self._ports_given if p is not None}:
                    raise ServerError(
                        f"tritonserver could not bind its ports on {self.host} (HTTP {self.http_port}, "
                        f"gRPC {self.grpc_port}): {busy}",
                        fix="choose other ports or stop the process that holds them",
                        where=str(self._log_path),
                    ) from None
            except BaseException:
                self.stop()
                raise
        return self

    def _launch(self, preferred: tuple[int, int, int] | None) -> None:
        self._exit_code, self._stopping, self._ready_log_size = None, False, 0
        ports = choose_ports(self.host, self._ports_given, metrics=self.metrics, preferred=preferred)
        self.http_port, self.grpc_port, self.metrics_port = ports.http, ports.grpc, ports.metrics
        self.port_note = ports.note(self.host)
        if self.preferred_ports and not preferred:
            metrics = f", metrics {ports.metrics}" if self.metrics else ""
            self.port_note = (f"Triton's usual ports were taken on {self.host} as the server started: using HTTP "
                              f"{ports.http}, gRPC {ports.grpc}{metrics} instead")
        assert self._binary is not None and self.backends is not None
        self.view = present_repository(self.model_repository, self.backends.aoti_backend)
        cmd = [
            str(self._binary.path),
            f"--model-repository={self.view.root}",
            f"--backend-directory={self.backends.backend_dir}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--model-control-mode={self.model_control_mode}",
            "--exit-on-error=false",
            "--strict-readiness=true",
            f"--log-verbose={self.log_verbose}",
            f"--exit-timeout-secs={int(self.exit_timeout)}",
        ]
        if not self.auto_complete_config:
            # the LibTorch backend has no auto-complete; with the Python backend it would start one extra stub
            # process (importing torch) per model just to ask model.py for a config
            cmd.append("--disable-auto-complete-config")
        if self.metrics:
            cmd += [f"--metrics-address={self.host}", f"--metrics-port={self.metrics_port}"]
        else:
            cmd.append("--allow-metrics=false")
        for name in self.load_models:
            cmd.append(f"--load-model={name}")
        for item in self.backend_config:
            cmd.append(f"--backend-config={item}")
        cmd += list(self.extra_args)
        self.command = cmd

        if self._log_path_arg is not None:
            self._log_path = self._log_path_arg
            self._log_path.parent.mkdir(parents=True, exist_ok=True)
        else:
            fd, name = tempfile.mkstemp(prefix="tritonserver-", suffix=".log")
            os.close(fd)
            self._log_path = Path(name)
        self._log_file = open(self._log_path, "wb")
        self._log_file.write(("$ " + " ".join(cmd) + "\n").encode())
        if self.view.presented:
            self._log_file.write(f"tei-export: {self.view.describe()}\n".encode())
        self._log_file.write(f"tei-export: memory: {self.memory.describe()}\n".encode())
        self._log_file.write(f"tei-export: openmp: {self.openmp.describe()}\n".encode())
        self._log_file.flush()
        self._compat_state = Path(tempfile.mkdtemp(prefix="tei-export-compat-state-"))
        env = self.openmp.environment(self.memory.environment(self._binary.environment(self._base_env)))
        env[COMPAT_STATE_ENV] = str(self._compat_state)
        try:
            self._proc = spawn_server(cmd, env, self._log_file)
        except OSError as err:
            self._log_file.close()
            raise ServerError(f"cannot start tritonserver: {err}", fix=INSTALL_HINT, where=str(self._binary.path))
        self._pgid = self._proc.pid  # start_new_session: the server leads its own group
        with _LIVE_LOCK:
            _LIVE_SERVERS.add(self)

    def _wait_ready(self) -> None:
        import tritonclient.http as httpclient

        deadline = time.monotonic() + self.startup_timeout
        client = httpclient.InferenceServerClient(self.http_url, connection_timeout=5.0, network_timeout=30.0)
        try:
            # 1. the HTTP endpoint answers (in mode none, models are loaded before the endpoints open)
            while True:
                self._check_alive()
                try:
                    if client.is_server_live():
                        break
                except Exception:
                    pass
                self._check_deadline(deadline, "to answer on HTTP")
                time.sleep(0.2)
            # 2. every expected model READY, or the server's reason why not. The initial load (mode none, poll, and
            #    --load-model in explicit mode) is over before the endpoints open: only LOADING is worth waiting on.
            while True:
                self._check_alive()
                index = client.get_model_repository_index()
                expected = expected_models(self.model_control_mode, self.load_models, index, self.model_repository)
                entries = by_name(index)
                loading = still_loading(expected, entries)
                if not loading:
                    break
                self._check_deadline(deadline, f"to load {', '.join(loading)}")
                time.sleep(0.25)
            failed = load_failures(expected, entries, self.log_text(), self.model_repository)
            if failed:
                raise ServerError(
                    "tritonserver failed to load " + "; ".join(failed),
                    fix="correct the model or its config.pbtxt; the full server log is at " + str(self._log_path),
                    where=str(self.model_repository),
                )
            while not client.is_server_ready():
                self._check_alive()
                if "failed to load all models" in self.log_text():
                    raise ServerError(
                        f"tritonserver failed to load all models: {error_lines(self.log_text())}",
                        fix=f"read the server log at {self._log_path}",
                        where=str(self.model_repository),
                    )
                self._check_deadline(deadline, "to report ready")
                time.sleep(0.2)
            self._models = tuple(sorted(n for n in expected if client.is_model_ready(n)))
            self._ready_log_size = len(self.log_text())
            self._refresh_stubs()
        finally:
            client.close()

    def _check_alive(self) -> None:
        if self._proc is None:
            raise ServerError("tritonserver is not running")
        code = self._proc.poll()
        if code is None:
            return
        log = self.log_text()
        if re.search(r"already in use|failed to start (HTTP|GRPC|metrics)", log, re.IGNORECASE):
            raise _PortInUse(error_lines(log))
        raise self._exit_error(code, "during startup")

    def _exit_error(self, code: int, during: str) -> ServerError:
        """What a server that ended with ``code`` (negative: the signal) ``during`` something says, and the fix."""
        log = self.log_text()
        how = f"was killed by {signal_name(-code)}" if code < 0 else f"exited with code {code}"
        known = explains_abort(log)
        if self._ready_log_size:  # it had started: only what it logged since then can explain the exit
            news = log[self._ready_log_size:]
            details = error_lines(news) or "its log shows no error after start-up"
        else:
            details = error_lines(log) or last_lines(log)
        hints = [known] if known else []
        if code == -9:
            hints.append("SIGKILL comes from outside the server: the kernel's out-of-memory killer (see dmesg) or "
                         "another process")
        hints.append(f"read the server log at {self._log_path}; start the server again")
        return ServerError(
            f"tritonserver (pid {self._pgid}) {how} {during}: {details}",
            fix="; ".join(hints),
            where=str(self.model_repository),
        )

    def check_running(self, doing: str, grace: float = 0.0) -> None:
        """Raise :class:`ServerError` naming how the server ended (e.g. killed by SIGKILL) and its log, when the
        process is gone while ``doing`` (e.g. "while verify sent requests"). ``grace``: seconds to wait for an exit
        that is under way (a client sees the sockets close before the process is reaped), for a caller whose
        requests just failed."""
        if self._proc is not None and self._exit_code is None:
            try:
                self._exit_code = self._proc.wait(timeout=grace) if grace > 0 else self._proc.poll()
            except subprocess.TimeoutExpired:
                pass
        if self._exit_code is not None and not self._stopping:
            raise self._exit_error(self._exit_code, doing)
        if self._proc is None:
            raise ServerError("tritonserver is not running", fix="start it first", where=str(self.model_repository))

    # -- Python backend stubs ---------------------------------------------------------------------------------
    def _refresh_stubs(self) -> list[StubProcess]:
        if self._proc is None:
            return []
        if self._stubs is None or self._stubs.server_pid != self._proc.pid:
            self._stubs = StubWatch(self._proc.pid, shm_regions=self._stubs.shm_regions if self._stubs else set())
        return self._stubs.refresh(server_alive=self._proc.poll() is None)

    def lost_stubs(self, models: Sequence[str] | None = None) -> list[StubProcess]:
        """The Python backend stubs (of ``models``, default all) that ran when the models became READY, or started
        since, and are gone now while the server runs. Triton 2.51 does not restart them: the model stays READY and
        every request to it fails."""
        return [stub for stub in self._refresh_stubs() if models is None or stub.model in models]

    def describe_lost_stub(self, stub: StubProcess, ensemble: str | None = None) -> str:
        return describe_lost_stub(stub, ensemble)

    def _check_deadline(self, deadline: float, what: str) -> None:
        if time.monotonic() > deadline:
            raise ServerError(
                f"tritonserver took longer than {self.startup_timeout:.0f} s {what}; last errors: "
                f"{error_lines(self.log_text()) or 'none'}",
                fix=f"raise the startup timeout or read the server log at {self._log_path}",
                where=str(self.model_repository),
            )

    def stop(self, timeout: float | None = None) -> None:
        """SIGTERM to the server's process group, wait, then SIGKILL whatever of the group is left; then remove the
        shared-memory regions that killed stubs left behind."""
        proc, pgid = self._proc, self._pgid
        try:
            if proc is not None:
                if proc.poll() is not None and self._exit_code is None:
                    self._exit_code = proc.returncode  # it died before this stop: check_running() says how
                self._stopping = self._exit_code is None
                self._refresh_stubs()
                stop_group(proc, pgid, self.stop_timeout if timeout is None else timeout)
        finally:
            if self._stubs is not None:
                self._stubs.remove_leftovers()
            self._proc = None
            self._pgid = pgid  # keep for callers that check the group is gone
            if self.view is not None:  # also when no process was launched: the view may exist
                self.view.remove()
            if self._compat_state is not None:
                shutil.rmtree(self._compat_state, ignore_errors=True)
                self._compat_state = None
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None
            with _LIVE_LOCK:
                _LIVE_SERVERS.discard(self)

    def describe(self) -> str:
        """Which server, which backend, which allocator and OpenMP wait: what a report names as what it measured."""
        assert self._binary is not None and self.backends is not None
        return (f"{self._binary.describe()}; {self.backends.describe()}; memory: {self.memory.describe()}; "
                f"openmp: {self.openmp.label}")

    def served_by(self, name: str) -> str:
        """Which backend serves model ``name``, from its config as the running server reports it."""
        from ..triton_client import TritonClient

        with TritonClient(self.http_url, "http") as client:
            served = client.model(name)
        assert self.backends is not None
        return self.backends.served_by(served.backend, served.runtime, served.platform)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"TritonServer({self.model_repository}, http={self.http_url}, grpc={self.grpc_url}, {state})"


class _PortInUse(Exception):
    pass
