"""The ``--backend-directory`` a server runs with, and which implementation serves ``pytorch_libtorch`` models.

``--backend`` chooses (``$TEI_EXPORT_BACKEND`` sets the default):

* ``auto``: the server's own ``pytorch/libtriton_pytorch.so`` (the NGC image), else NVIDIA's backend built from source
  for this server and torch (``tei-export backend build``, found in the cache), else tei-export's compatibility
  backend, with the reason printed;
* ``nvidia``: one of the first two, or an error that says how to build it;
* ``nvidia:BRANCH``: NVIDIA's backend of that pytorch_backend branch built by ``tei-export backend build --branch
  BRANCH`` (e.g. ``nvidia:main``, the newest, beside the server's own release), so a repository can be checked on
  the oldest and the newest backend with one server;
* ``compat``: the compatibility backend (``compat_backend/model.py``, Python-based, run by the Python backend).

Except for a server's own folder, which is used untouched, the folder is assembled once in the cache: the server's
``python/`` backend with the stub for this interpreter (the text ensemble's tokenizer is a Python-backend model),
``pytorch/`` holding NVIDIA's library or the compatibility ``model.py``, links to the server's other backends, and
``tei_export_compat/model.py``: the compatibility backend under a name of its own, which serves torch_aoti
(``model.pt2``) models on servers before 26.03 (see :mod:`.repository_view`), also when NVIDIA's backend serves the
TorchScript models.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from ..cache import cache_dir, install
from ..errors import ServerError
from ..libtorch import installed_libtorch
from .built_backends import LIBRARY, BuiltBackend, find_built_backend
from .binary import TritonBinary, pytriton_server_root

CHOICES = ("auto", "nvidia", "compat")
BACKEND_ENV = "TEI_EXPORT_BACKEND"
NVIDIA, COMPAT = "nvidia", "compat"
origin_server, origin_built, origin_compat = "server", "built", "compat"
COMPAT_MODEL_PY = Path(__file__).resolve().parent / "compat_backend" / "model.py"
# model.py and the modules it imports (tei_compat_*.py), copied together into a backend folder
COMPAT_FILES = (COMPAT_MODEL_PY, *sorted(COMPAT_MODEL_PY.parent.glob("tei_compat_*.py")))
COMPAT_BACKEND_NAME = "tei_export_compat"
NVIDIA_LABEL = "NVIDIA C++ libtriton_pytorch.so"
CACHE_KIND = "backend-dirs"
_BUILD_HINT = ("tei-export backend build (sources from --source or $TEI_EXPORT_BACKEND_SOURCE, else a git clone of "
               "the release branch)")


def parse_choice(choice: str) -> tuple[str, str | None]:
    """``auto``/``nvidia``/``compat``/``nvidia:BRANCH`` -> (kind, branch or None), or a ServerError naming the forms."""
    kind, colon, branch = choice.partition(":")
    if kind not in CHOICES or (colon and (kind != NVIDIA or not branch.strip())):
        raise ServerError(f"unknown backend choice '{choice}'",
                          fix=f"use one of {', '.join(CHOICES)}, or nvidia:BRANCH for a branch built by "
                              "`tei-export backend build --branch BRANCH`",
                          where=f"--backend or ${BACKEND_ENV}")
    return kind, (branch.strip() or None) if colon else None


@dataclass(frozen=True)
class BackendSetup:
    """The backend folder and what serves the ``pytorch`` backend in it."""

    backend_dir: Path
    pytorch: str  # NVIDIA or COMPAT
    origin: str  # origin_server, origin_built or origin_compat
    library: Path | None = None  # NVIDIA's libtriton_pytorch.so
    branch: str | None = None  # its pytorch_backend branch, when tei-export built it
    reason: str = ""  # why the compatibility backend is in use
    notes: tuple[str, ...] = ()

    @property
    def compat(self) -> bool:
        return self.pytorch == COMPAT

    @property
    def aoti_backend(self) -> str | None:
        """The backend name torch_aoti models are presented under on servers without torch_aoti; None when the
        server's own folder is used (it has no tei_export_compat)."""
        return None if self.origin == origin_server else COMPAT_BACKEND_NAME

    @property
    def nvidia_label(self) -> str:
        return f"{NVIDIA_LABEL} ({self.branch or 'shipped with the server'})"

    def describe(self) -> str:
        if self.origin == origin_server:
            return f"NVIDIA's LibTorch backend libtriton_pytorch.so, shipped with the server ({self.library})"
        if self.origin == origin_built:
            return (f"NVIDIA's LibTorch backend libtriton_pytorch.so, pytorch_backend {self.branch} built from source "
                    f"by tei-export ({self.library})")
        return (f"tei-export's compatibility backend (Python, model.py) stands in for NVIDIA's libtriton_pytorch.so: "
                f"{self.reason}")

    def served_by(self, backend: str, runtime: str, platform: str = "") -> str:
        return served_by(backend, runtime, platform, self.nvidia_label)


def served_by(backend: str, runtime: str, platform: str = "", nvidia_label: str = NVIDIA_LABEL) -> str:
    """Who serves a model, from its config as the server reports it: ``runtime`` is ``model.py`` for a Python-based
    backend (the compatibility backend) and empty for a backend's shared library."""
    if platform == "ensemble":
        return "ensemble"
    if backend == COMPAT_BACKEND_NAME:
        return "compatibility backend (model.py; torch_aoti presented to a server without it)"
    if backend == "pytorch":
        return "compatibility backend (model.py)" if runtime == "model.py" else nvidia_label
    return f"{backend or platform or 'unknown'} backend"


def _python_stub(binary: TritonBinary) -> tuple[Path, tuple[str, ...]]:
    """The Python backend stub for the running interpreter's major.minor."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    candidates = []
    if binary.python_stubs_dir is not None:
        candidates.append(binary.python_stubs_dir)
    wheel = pytriton_server_root()
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


def _fingerprint(files: list[Path], extra: str) -> str:
    digest = hashlib.sha256(extra.encode())
    for path in files:
        stat = path.stat()
        digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    for path in COMPAT_FILES:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _copy_compat(folder: Path) -> None:
    for path in COMPAT_FILES:
        shutil.copy2(path, folder / path.name)


def assemble(binary: TritonBinary, library: Path | None = None,
             cache: str | os.PathLike | None = None) -> tuple[Path, tuple[str, ...]]:
    """The backend folder for ``binary`` with ``library`` (NVIDIA's) or the compatibility ``model.py`` as
    ``pytorch/``, assembled once per content in the cache; returns (folder, notes)."""
    own = binary.backend_dir
    python_src = own / "python"
    if not (python_src / "libtriton_python.so").is_file():
        raise ServerError(
            "the server has no Python backend (python/libtriton_python.so), which the compatibility backend and the "
            "text pipeline's tokenizer model run on",
            fix="use a tritonserver with the python backend installed (NGC image or nvidia-pytriton)",
            where=str(own),
        )
    stub, notes = _python_stub(binary)
    python_files = sorted(p for p in python_src.iterdir() if p.is_file())
    inputs = [*python_files, stub, *([library] if library is not None else [])]
    key = _fingerprint(inputs, f"{sys.version_info[:2]}|{own}|{library}")
    root = cache_dir(CACHE_KIND, cache)
    target = root / f"{'nvidia' if library is not None else 'compat'}-{key}"
    if (target / ".complete").is_file():
        return target, notes
    staging = Path(tempfile.mkdtemp(prefix=f".staging-{key}-", dir=root))
    shutil.copytree(python_src, staging / "python", ignore=shutil.ignore_patterns("__pycache__"))
    dest_stub = staging / "python" / "triton_python_backend_stub"
    shutil.copy2(stub, dest_stub)
    dest_stub.chmod(0o755)
    (staging / "pytorch").mkdir()
    if library is not None:
        (staging / "pytorch" / LIBRARY).symlink_to(library)
    else:
        _copy_compat(staging / "pytorch")
    (staging / COMPAT_BACKEND_NAME).mkdir()
    _copy_compat(staging / COMPAT_BACKEND_NAME)
    for other in sorted(own.iterdir()) if own.is_dir() else []:
        if other.is_dir() and other.name not in ("python", "pytorch", COMPAT_BACKEND_NAME):
            (staging / other.name).symlink_to(other.resolve(), target_is_directory=True)
    (staging / ".complete").write_text(f"stub={stub}\nsource={own}\nlibrary={library}\n")
    return install(staging, target), notes


def resolve(binary: TritonBinary, choice: str | None = None,
            build_cache: str | os.PathLike | None = None) -> BackendSetup:
    """What ``choice`` (``auto``, ``nvidia``, ``compat``; default ``$TEI_EXPORT_BACKEND``, else ``auto``) picks for
    ``binary``, without assembling anything: ``backend_dir`` is the server's own folder. See the module docstring."""
    choice = choice or os.environ.get(BACKEND_ENV) or "auto"
    kind, branch = parse_choice(choice)
    own = binary.backend_dir / "pytorch" / LIBRARY
    if kind == COMPAT:
        return BackendSetup(binary.backend_dir, COMPAT, origin_compat,
                            reason=f"chosen (--backend compat or ${BACKEND_ENV}=compat)")
    if own.is_file() and branch is None:
        return BackendSetup(binary.backend_dir, NVIDIA, origin_server, library=own)
    built: BuiltBackend | None = find_built_backend(binary, branch=branch, cache=build_cache)
    if built is not None:
        return BackendSetup(binary.backend_dir, NVIDIA, origin_built, library=built.library, branch=built.branch)
    torch_version = installed_libtorch().version
    if branch is not None:
        raise ServerError(
            f"no build of NVIDIA's pytorch_backend {branch} for tritonserver {binary.version} and torch "
            f"{torch_version} is in the cache",
            fix=f"run tei-export backend build --branch {branch} (with --source for offline sources), or choose "
                "--backend nvidia for the server's own release",
            where=f"--backend {choice}")
    if choice == "nvidia":
        raise ServerError(
            f"NVIDIA's LibTorch backend is not available: tritonserver {binary.version} has no {LIBRARY} and none "
            f"has been built for it and torch {torch_version}",
            fix=f"run {_BUILD_HINT}, use a server that ships it (the NGC image), or pass --backend compat",
            where=str(binary.backend_dir))
    return BackendSetup(binary.backend_dir, COMPAT, origin_compat,
                        reason=f"tritonserver {binary.version} has no {LIBRARY} and no build of NVIDIA's backend for "
                               f"it and torch {torch_version} is in the cache ({_BUILD_HINT} makes one)")


def prepare_backends(binary: TritonBinary, choice: str | None = None,
                     cache: str | os.PathLike | None = None,
                     build_cache: str | os.PathLike | None = None) -> BackendSetup:
    """The backend folder for ``binary`` by ``choice`` (see :func:`resolve`): the server's own folder when it ships
    NVIDIA's library, else one assembled in the cache."""
    chosen = resolve(binary, choice, build_cache)
    if chosen.origin == origin_server:
        return chosen
    folder, notes = assemble(binary, chosen.library, cache)
    return replace(chosen, backend_dir=folder, notes=notes)
