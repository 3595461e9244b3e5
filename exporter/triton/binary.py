"""Find the ``tritonserver`` binary and what it needs to run: its version, its backend folder, the libraries and
Python backend stubs around it.

Looked for in this order: an explicit path, ``tritonserver`` on ``PATH`` (the NGC image), ``/opt/tritonserver``,
and the binary bundled in the ``nvidia-pytriton`` wheel.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping

from ..errors import ServerError

ORIGINS = ("explicit", "PATH", "/opt/tritonserver", "nvidia-pytriton")
OPT_ROOT = Path("/opt/tritonserver")
_VERSION_RE = re.compile(r"server_version\s*\|\s*(\S+)")
INSTALL_HINT = (
    "install NVIDIA's server (pip install nvidia-pytriton, which bundles tritonserver), put `tritonserver` on PATH, "
    "use the NGC image where it lives in /opt/tritonserver, or pass the binary's path explicitly"
)


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
        # Python-backend models (the tokenizer model, the compatibility backend) would otherwise leave
        # __pycache__/ in the exported repository, which then ships with it.
        env["PYTHONDONTWRITEBYTECODE"] = "1"
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


def pytriton_server_root() -> Path | None:
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
            raise ServerError(f"cannot run tritonserver: {err}", fix=INSTALL_HINT, where=str(path)) from None
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
    binary = TritonBinary(path=path, version="unknown", origin=origin, backend_dir=backend_dir, env=env,
                          python_stubs_dir=stubs_dir)
    if read_version:
        binary = replace(binary, version=probe_version(path, binary.environment()))
    return binary


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
            raise ServerError("the tritonserver binary given is not executable", fix=f"chmod +x {path}",
                              where=str(path))
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
        root = pytriton_server_root()
        if root is not None:
            return _binary_at(root / "bin" / "tritonserver", "nvidia-pytriton", read_version)

    raise ServerError(f"no tritonserver found (looked for {', '.join(looked)})", fix=INSTALL_HINT)
