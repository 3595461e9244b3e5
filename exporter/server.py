"""Find and run a real ``tritonserver`` for an exported model repository.

* :func:`find_tritonserver` locates a binary (explicit path, ``PATH``, ``/opt/tritonserver``, the ``nvidia-pytriton``
  wheel) and reads its version.
* :func:`prepare_backends` returns the backend directory to serve ``platform: "pytorch_libtorch"`` with: the server's
  own one when it has ``pytorch/libtriton_pytorch.so``, else an assembled folder where tei-export's Python-based
  LibTorch compatibility backend (``exporter/compat_backend/model.py``) stands in.
* :class:`TritonServer` starts the server on free local ports in its own process group, waits until every model is
  READY (or raises :class:`~exporter.errors.ServerError` with the server's own load error) and stops the whole group.
"""
from __future__ import annotations

import atexit
import hashlib
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from exporter.errors import ServerError
from exporter.repository_view import RepositoryView, present_repository

ORIGINS = ("explicit", "PATH", "/opt/tritonserver", "nvidia-pytriton")
OPT_ROOT = Path("/opt/tritonserver")
COMPAT_MODEL_PY = Path(__file__).resolve().parent / "compat_backend" / "model.py"
BACKEND_LIBTORCH = "libtorch"
BACKEND_COMPAT = "compat"
_VERSION_RE = re.compile(r"server_version\s*\|\s*(\S+)")
_INSTALL_HINT = (
    "install NVIDIA's server (pip install nvidia-pytriton, which bundles tritonserver), put `tritonserver` on PATH, "
    "use the NGC image where it lives in /opt/tritonserver, or pass the binary's path explicitly"
)


# ---------------------------------------------------------------------------------------------------------------
# Finding the binary
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TritonBinary:
    """A tritonserver executable and what it needs to run."""

    path: Path
    version: str
    origin: str  # one of ORIGINS
    backend_dir: Path
    env: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False)
    """Path-like variables to prepend to the environment (e.g. ``LD_LIBRARY_PATH``)."""
    python_stubs_dir: Path | None = None
    """``python_backend_stubs/<major.minor>/`` folders shipped with the server (nvidia-pytriton), if any."""

    def environment(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment to run the server in: ``base`` (default ``os.environ``) plus :attr:`env`, with this
        interpreter's ``bin`` folder first on ``PATH`` so the Python backend stub's embedded Python finds the same
        packages (torch) as the running interpreter."""
        env = dict(os.environ if base is None else base)
        for key, value in self.env.items():
            env[key] = _prepend(value, env.get(key))
        env["PATH"] = _prepend(str(python_bin_dir()), env.get("PATH"))
        return env

    def describe(self) -> str:
        return f"tritonserver {self.version} ({self.origin}: {self.path})"


def python_bin_dir() -> Path:
    """The running interpreter's ``bin`` folder (a virtualenv's ``bin`` when one is active)."""
    return Path(sys.prefix) / ("Scripts" if os.name == "nt" else "bin")


def _prepend(value: str, existing: str | None) -> str:
    parts = [p for p in value.split(os.pathsep) if p]
    if existing:
        parts += [p for p in existing.split(os.pathsep) if p and p not in parts]
    return os.pathsep.join(parts)


def _pytriton_server_root() -> Path | None:
    """``site-packages/pytriton/tritonserver`` of the installed nvidia-pytriton wheel (without importing it)."""
    try:
        spec = importlib.util.find_spec("pytriton")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        root = Path(location) / "tritonserver"
        if (root / "bin" / "tritonserver").is_file():
            return root
    return None


def _layout(binary: Path) -> tuple[Path, dict[str, str], Path | None]:
    """Backend dir, environment additions and stub folder for a binary, from the install layout around it."""
    real = binary.resolve()
    root = real.parent.parent  # <root>/bin/tritonserver
    backend_dir = root / "backends"
    if not backend_dir.is_dir() and (OPT_ROOT / "backends").is_dir():
        backend_dir = OPT_ROOT / "backends"
    lib_dirs = []
    if (root / "lib").is_dir():
        lib_dirs.append(str(root / "lib"))
    stubs = root / "python_backend_stubs"
    stubs_dir = stubs if stubs.is_dir() else None
    # nvidia-pytriton: site-packages/pytriton/tritonserver/bin/tritonserver, libs in site-packages/nvidia_pytriton.libs
    wheel_libs = root.parent.parent / "nvidia_pytriton.libs"
    if wheel_libs.is_dir():
        lib_dirs.append(str(wheel_libs))
    env = {"LD_LIBRARY_PATH": os.pathsep.join(lib_dirs)} if lib_dirs else {}
    return backend_dir, env, stubs_dir


def probe_version(path: Path, env: Mapping[str, str], timeout: float = 60.0) -> str:
    """Read the server's version: started against a missing model repository, tritonserver prints its option
    table (``server_version | 2.51.0``) and exits at once (about 30 ms)."""
    with tempfile.TemporaryDirectory(prefix="tei-export-probe-") as tmp:
        cmd = [
            str(path),
            f"--model-repository={Path(tmp) / 'missing'}",
            "--allow-http=false",
            "--allow-grpc=false",
            "--allow-metrics=false",
            "--exit-timeout-secs=1",
        ]
        try:
            done = subprocess.run(
                cmd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                start_new_session=True,
            )
        except subprocess.TimeoutExpired:
            raise ServerError(
                f"tritonserver did not answer within {timeout:.0f} s when asked for its version",
                fix="check that the binary runs (try it by hand with --help)",
                where=str(path),
            ) from None
        except OSError as err:
            raise ServerError(f"cannot run tritonserver: {err}", fix=_INSTALL_HINT, where=str(path)) from None
    text = done.stdout.decode("utf-8", "replace")
    match = _VERSION_RE.search(text)
    if match is None:
        tail = "\n".join(text.strip().splitlines()[-8:])
        raise ServerError(
            f"tritonserver did not start far enough to report its version (exit code {done.returncode}): {tail}",
            fix="a missing shared library means LD_LIBRARY_PATH lacks the server's lib folder; "
            "otherwise run the binary by hand to see why it fails",
            where=str(path),
        )
    return match.group(1)


def _binary_at(path: Path, origin: str, read_version: bool) -> TritonBinary:
    backend_dir, env, stubs_dir = _layout(path)
    version = "unknown"
    if read_version:
        full_env = dict(os.environ)
        for key, value in env.items():
            full_env[key] = _prepend(value, full_env.get(key))
        version = probe_version(path, full_env)
    return TritonBinary(
        path=path, version=version, origin=origin, backend_dir=backend_dir, env=env, python_stubs_dir=stubs_dir
    )


def find_tritonserver(
    explicit: str | os.PathLike | None = None,
    *,
    path_env: str | None = None,
    opt_root: str | os.PathLike | None = OPT_ROOT,
    use_pytriton: bool = True,
    read_version: bool = True,
) -> TritonBinary:
    """Locate tritonserver: ``explicit`` (a binary, or an install folder holding ``bin/tritonserver``), else
    ``tritonserver`` on ``PATH`` (``path_env``, default ``$PATH``), else ``<opt_root>/bin/tritonserver``, else the
    binary bundled in the nvidia-pytriton wheel. Raises :class:`ServerError` naming every place looked at."""
    if explicit is not None:
        path = Path(explicit).expanduser()
        if path.is_dir() and (path / "bin" / "tritonserver").is_file():
            path = path / "bin" / "tritonserver"
        if not path.is_file():
            raise ServerError(
                "the tritonserver binary given does not exist",
                fix="pass the path of the `tritonserver` executable (or of a folder holding bin/tritonserver)",
                where=str(path),
            )
        if not os.access(path, os.X_OK):
            raise ServerError("the tritonserver binary given is not executable", fix=f"chmod +x {path}", where=str(path))
        return _binary_at(path.absolute(), "explicit", read_version)

    looked = []
    search = os.environ.get("PATH", "") if path_env is None else path_env
    on_path = shutil.which("tritonserver", path=search) if search else None
    looked.append("`tritonserver` on PATH")
    if on_path:
        return _binary_at(Path(on_path).absolute(), "PATH", read_version)

    if opt_root is not None:
        opt_bin = Path(opt_root) / "bin" / "tritonserver"
        looked.append(str(opt_bin))
        if opt_bin.is_file() and os.access(opt_bin, os.X_OK):
            return _binary_at(opt_bin, "/opt/tritonserver", read_version)

    if use_pytriton:
        looked.append("the nvidia-pytriton wheel (pytriton/tritonserver/bin/tritonserver)")
        root = _pytriton_server_root()
        if root is not None:
            return _binary_at(root / "bin" / "tritonserver", "nvidia-pytriton", read_version)

    raise ServerError(f"no tritonserver found (looked for {', '.join(looked)})", fix=_INSTALL_HINT)


# ---------------------------------------------------------------------------------------------------------------
# Backends: real LibTorch backend, or the compatibility backend
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BackendSetup:
    """The ``--backend-directory`` to use and which implementation serves ``pytorch_libtorch`` models."""

    backend_dir: Path
    pytorch_backend: str  # BACKEND_LIBTORCH or BACKEND_COMPAT
    notes: tuple[str, ...] = ()

    @property
    def compat(self) -> bool:
        return self.pytorch_backend == BACKEND_COMPAT

    def describe(self) -> str:
        if self.compat:
            return (
                "compatibility backend in use: libtriton_pytorch.so is not installed, so tei-export's Python-based "
                f"LibTorch backend serves pytorch_libtorch models ({self.backend_dir})"
            )
        return f"NVIDIA LibTorch backend (libtriton_pytorch.so) in {self.backend_dir}"


def default_cache_dir() -> Path:
    if os.environ.get("TEI_EXPORT_CACHE"):
        return Path(os.environ["TEI_EXPORT_CACHE"]) / "triton-backends"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tei-export" / "triton-backends"


def _python_stub(binary: TritonBinary) -> tuple[Path, tuple[str, ...]]:
    """The Python backend stub for the running interpreter's major.minor."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    candidates = []
    if binary.python_stubs_dir is not None:
        candidates.append(binary.python_stubs_dir)
    wheel = _pytriton_server_root()
    if wheel is not None and (wheel / "python_backend_stubs") not in candidates:
        candidates.append(wheel / "python_backend_stubs")
    for stubs in candidates:
        stub = stubs / version / "triton_python_backend_stub"
        if stub.is_file():
            return stub, ()
    own = binary.backend_dir / "python" / "triton_python_backend_stub"
    if own.is_file():
        return own, (
            f"using the server's own Python backend stub ({own}); it must be built for Python {version} "
            "(the interpreter whose torch the compatibility backend imports)",
        )
    raise ServerError(
        f"no Python backend stub for Python {version} (looked in "
        f"{', '.join(str(c / version) for c in candidates) or 'no stub folders'} and {own})",
        fix="pip install nvidia-pytriton (ships stubs for Python 3.8-3.13) or run tei-export under the Python "
        "version the server's stub was built for",
    )


def _fingerprint(paths: Iterable[Path], extra: str) -> str:
    digest = hashlib.sha256(extra.encode())
    for path in paths:
        stat = path.stat()
        digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    digest.update(COMPAT_MODEL_PY.read_bytes())
    return digest.hexdigest()[:16]


def prepare_backends(binary: TritonBinary, cache_dir: str | os.PathLike | None = None) -> BackendSetup:
    """Backend folder for ``binary``. With ``pytorch/libtriton_pytorch.so`` present, the server's own folder is
    used untouched. Otherwise a folder is assembled (once, in ``cache_dir``) holding the server's ``python/``
    backend with the stub for this interpreter, ``pytorch/model.py`` (the compatibility backend) and links to any
    other backends the server has."""
    own = binary.backend_dir
    if (own / "pytorch" / "libtriton_pytorch.so").is_file():
        return BackendSetup(own, BACKEND_LIBTORCH)
    python_src = own / "python"
    if not (python_src / "libtriton_python.so").is_file():
        raise ServerError(
            "the server has neither the LibTorch backend (pytorch/libtriton_pytorch.so) nor the Python backend "
            "(python/libtriton_python.so) that could host tei-export's compatibility backend",
            fix="use a tritonserver with the pytorch or python backend installed (NGC image or nvidia-pytriton)",
            where=str(own),
        )
    stub, notes = _python_stub(binary)
    python_files = sorted(p for p in python_src.iterdir() if p.is_file())
    key = _fingerprint([*python_files, stub], f"{sys.version_info[:2]}|{own}")

    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError:
        root = Path(tempfile.gettempdir()) / f"tei-export-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
        root.mkdir(parents=True, exist_ok=True)
    target = root / f"backends-{key}"
    if (target / ".complete").is_file():
        return BackendSetup(target, BACKEND_COMPAT, notes)

    staging = Path(tempfile.mkdtemp(prefix=f".staging-{key}-", dir=root))
    try:
        shutil.copytree(python_src, staging / "python", ignore=shutil.ignore_patterns("__pycache__"))
        dest_stub = staging / "python" / "triton_python_backend_stub"
        shutil.copy2(stub, dest_stub)
        dest_stub.chmod(0o755)
        (staging / "pytorch").mkdir()
        shutil.copy2(COMPAT_MODEL_PY, staging / "pytorch" / "model.py")
        for other in sorted(own.iterdir()) if own.is_dir() else []:
            if other.is_dir() and other.name not in ("python", "pytorch"):
                (staging / other.name).symlink_to(other.resolve(), target_is_directory=True)
        (staging / ".complete").write_text(f"stub={stub}\nsource={own}\n")
        try:
            os.rename(staging, target)
        except OSError:  # another process finished first
            if not (target / ".complete").is_file():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return BackendSetup(target, BACKEND_COMPAT, notes)


# ---------------------------------------------------------------------------------------------------------------
# Running the server
# ---------------------------------------------------------------------------------------------------------------
def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _client_host(host: str) -> str:
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
    * ``host``: address for HTTP and gRPC (and metrics when ``metrics``); ports are picked free unless given.
    * ``model_control_mode``: ``none`` (every model loaded at start), ``explicit`` (``load_models``), ``poll``.
    * ``startup_timeout``: seconds to wait until the server and every expected model are READY.
    * ``stop_timeout``: seconds :meth:`stop` waits after SIGTERM before SIGKILL; ``exit_timeout`` is the server's
      own ``--exit-timeout-secs`` (how long it waits for open connections and in-flight requests).
    * ``auto_complete_config``: off by default, as the LibTorch backend has none (and with the compatibility
      backend it would cost one extra torch-importing process per model).
    * ``log_path``: the server's stdout and stderr (and its backend stubs'); a temp file when None.
    * ``backend_config``: ``--backend-config`` values, e.g. ``python,shm-default-byte-size=...``.
    * ``cache_dir``: where an assembled compatibility backend folder is kept (see :func:`prepare_backends`).
    * ``env``: base environment instead of ``os.environ`` (the binary's additions and the venv ``bin`` still apply).
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
        model_control_mode: str = "none",
        load_models: Sequence[str] = (),
        startup_timeout: float = 180.0,
        stop_timeout: float = 30.0,
        exit_timeout: int = 5,
        auto_complete_config: bool = False,
        log_path: str | os.PathLike | None = None,
        log_verbose: int = 0,
        backend_config: Sequence[str] = (),
        cache_dir: str | os.PathLike | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ):
        self.model_repository = Path(model_repository).absolute()
        self._binary_arg = binary
        self.host = host
        self._ports_given = (http_port, grpc_port, metrics_port)
        self.metrics = metrics
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
        self._binary: TritonBinary | None = binary if isinstance(binary, TritonBinary) else None
        self.backends: BackendSetup | None = None
        self.view: RepositoryView | None = None  # what --model-repository points at while the server runs
        self._proc: subprocess.Popen | None = None
        self._pgid: int | None = None
        self._log_file = None
        self._log_path: Path | None = None
        self.http_port = self.grpc_port = self.metrics_port = None
        self._models: tuple[str, ...] = ()
        self.command: list[str] = []

    # -- properties -------------------------------------------------------------------------------------------
    @property
    def binary(self) -> TritonBinary | None:
        return self._binary

    @property
    def http_url(self) -> str:
        return f"{_client_host(self.host)}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{_client_host(self.host)}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str | None:
        return f"http://{_client_host(self.host)}:{self.metrics_port}/metrics" if self.metrics else None

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
        if self._binary is None:
            arg = self._binary_arg
            self._binary = find_tritonserver(None if arg is None else str(arg))
        if self.backends is None:
            self.backends = prepare_backends(self._binary, self.cache_dir)
        attempts = 1 if all(p is not None for p in self._ports_given[:2]) else 3
        for attempt in range(attempts):
            self._launch()
            try:
                self._wait_ready()
                return self
            except _PortInUse as busy:
                self.stop()
                if attempt + 1 == attempts:
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

    def _launch(self) -> None:
        http_port, grpc_port, metrics_port = self._ports_given
        self.http_port = http_port or free_port(self.host)
        self.grpc_port = grpc_port or free_port(self.host)
        while self.grpc_port == self.http_port:
            self.grpc_port = free_port(self.host)
        assert self._binary is not None and self.backends is not None
        self.view = present_repository(self.model_repository, self.backends.compat)
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
            self.metrics_port = metrics_port or free_port(self.host)
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
        self._log_file.flush()
        try:
            self._proc = subprocess.Popen(
                cmd,
                env=self._binary.environment(self._base_env),
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as err:
            self._log_file.close()
            raise ServerError(f"cannot start tritonserver: {err}", fix=_INSTALL_HINT, where=str(self._binary.path))
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
                expected = self._expected_models(index)
                by_name: dict[str, list[dict]] = {}
                for entry in index:
                    by_name.setdefault(entry.get("name", ""), []).append(entry)
                loading = [n for n in expected if any(e.get("state") == "LOADING" for e in by_name.get(n, []))]
                if not loading:
                    break
                self._check_deadline(deadline, f"to load {', '.join(loading)}")
                time.sleep(0.25)
            log = self.log_text()
            failed = []
            for name in expected:
                entries = by_name.get(name, [])
                if any(e.get("state") == "READY" for e in entries):
                    continue
                reasons = []
                for e in entries:
                    if e.get("reason"):
                        version = f" version {e['version']}" if e.get("version") else ""
                        reasons.append(f"'{name}'{version}: {_first_paragraph(e['reason'])}")
                if not reasons:
                    found = _model_error_lines(log, name)
                    if found:
                        reasons.append(f"'{name}': {found}")
                    elif not entries:
                        reasons.append(f"'{name}': not found in the model repository")
                    else:
                        reasons.append(f"'{name}': not loaded (state {entries[0].get('state') or 'none'})")
                failed.extend(reasons)
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
                        f"tritonserver failed to load all models: {_error_lines(self.log_text())}",
                        fix=f"read the server log at {self._log_path}",
                        where=str(self.model_repository),
                    )
                self._check_deadline(deadline, "to report ready")
                time.sleep(0.2)
            self._models = tuple(sorted(n for n in expected if client.is_model_ready(n)))
        finally:
            client.close()

    def _expected_models(self, index: list[dict]) -> list[str]:
        if self.model_control_mode == "explicit" and "*" not in self.load_models:
            return sorted(set(self.load_models))
        names = {e["name"] for e in index if e.get("name")}
        if self.model_control_mode == "explicit":  # --load-model=* loads every folder
            return sorted(names)
        # every folder of the repository is a model to Triton, even one it could not list (no version folder)
        names.update(p.name for p in self.model_repository.iterdir() if p.is_dir() and not p.name.startswith("."))
        return sorted(names)

    def _check_alive(self) -> None:
        if self._proc is None:
            raise ServerError("tritonserver is not running")
        code = self._proc.poll()
        if code is None:
            return
        log = self.log_text()
        if re.search(r"already in use|failed to start (HTTP|GRPC|metrics)", log, re.IGNORECASE):
            raise _PortInUse(_error_lines(log))
        how = f"was killed by {_signal_name(-code)}" if code < 0 else f"exited with code {code}"
        details = _error_lines(log) or _last_lines(log)
        raise ServerError(
            f"tritonserver {how} during startup: {details}",
            fix=f"read the server log at {self._log_path}",
            where=str(self.model_repository),
        )

    def _check_deadline(self, deadline: float, what: str) -> None:
        if time.monotonic() > deadline:
            raise ServerError(
                f"tritonserver took longer than {self.startup_timeout:.0f} s {what}; last errors: "
                f"{_error_lines(self.log_text()) or 'none'}",
                fix=f"raise the startup timeout or read the server log at {self._log_path}",
                where=str(self.model_repository),
            )

    def stop(self, timeout: float | None = None) -> None:
        """SIGTERM to the server's process group, wait, then SIGKILL whatever of the group is left."""
        proc, pgid = self._proc, self._pgid
        if proc is None:
            if self.view is not None:  # launched no process, but may have made the view
                self.view.remove()
            return
        timeout = self.stop_timeout if timeout is None else timeout
        try:
            if proc.poll() is None:
                _signal_group(pgid, signal.SIGTERM)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    _signal_group(pgid, signal.SIGKILL)
                    proc.wait(timeout=30)
            # the leader is gone; stubs (same group) normally exit with it
            deadline = time.monotonic() + 5.0
            while pgid is not None and _group_alive(pgid):
                if time.monotonic() > deadline:
                    _signal_group(pgid, signal.SIGKILL)
                    end = time.monotonic() + 5.0
                    while _group_alive(pgid) and time.monotonic() < end:
                        time.sleep(0.05)
                    break
                time.sleep(0.05)
        finally:
            self._proc = None
            self._pgid = pgid  # keep for callers that check the group is gone
            if self.view is not None:
                self.view.remove()
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None
            with _LIVE_LOCK:
                _LIVE_SERVERS.discard(self)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"TritonServer({self.model_repository}, http={self.http_url}, grpc={self.grpc_url}, {state})"


class _PortInUse(Exception):
    pass


def _signal_group(pgid: int | None, sig: int) -> None:
    if pgid is None:
        return
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _last_lines(log: str, limit: int = 5) -> str:
    """The last log records, without the option/model tables."""
    lines = [l.strip() for l in log.splitlines() if l.strip() and not l.startswith(("+", "|", "$ "))]
    return " | ".join(lines[-limit:]) or "the log is empty"


def _first_paragraph(text: str) -> str:
    """A load error without the Python stub's ``At:`` traceback that follows it."""
    return text.split("\n\nAt:", 1)[0].strip().rstrip(";").strip()


_NOISE = ("CudaDriverHelper has not been initialized", "Unable to allocate pinned system memory")


def _model_error_lines(log: str, name: str) -> str:
    """The server's error lines that name model ``name`` (quoted, as Triton writes it)."""
    quoted = (f"'{name}'", f"'{name}:", f"'{name}/")
    picked = []
    for line in log.splitlines():
        if re.match(r"^E\d{4} ", line) and any(q in line for q in quoted):
            text = line.split("] ", 1)[-1].strip().strip('"')
            if text not in picked:
                picked.append(text)
    return " | ".join(picked)


def _error_lines(log: str, limit: int = 12) -> str:
    """The server's error lines (``E1122 ...`` records and ``error: ...``) from its log, most recent last."""
    picked = [
        line.strip()
        for line in log.splitlines()
        if not any(noise in line for noise in _NOISE)
        and (
            re.match(r"^E\d{4} ", line)
            or line.lower().startswith("error:")
            or "Traceback" in line
            or re.search(r"(Error|Exception):", line)
        )
    ]
    return " | ".join(picked[-limit:])
