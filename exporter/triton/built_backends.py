"""The builds of NVIDIA's LibTorch backend in the cache, as :mod:`.backend_build` records them: what each was built
for (server, branch, torch) and from what, and which one a server can use. Read by the backend choice
(:mod:`.backends`) and ``backend status``; written only by the build, which also starts a server to check its result,
so reading them needs neither."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..cache import cache_dir
from ..errors import BackendBuildError
from ..libtorch import installed_libtorch
from .binary import TritonBinary
from .releases import branch_for

CACHE_KIND = "nvidia-pytorch-backend"
LIBRARY = "libtriton_pytorch.so"
RECORD = "build.json"
BUILD_LOG = "build.log"


@dataclass(frozen=True)
class BuiltBackend:
    """A ``libtriton_pytorch.so`` built by :func:`~exporter.triton.backend_build.build_backend`, as recorded in its
    ``build.json``."""

    folder: Path
    server_version: str
    server_library: str
    branch: str
    torch_version: str
    torch_lib: str
    source: str
    source_checksum: str
    built_at: str
    seconds: float

    @property
    def library(self) -> Path:
        return self.folder / LIBRARY

    @property
    def log(self) -> Path:
        return self.folder / BUILD_LOG

    def describe(self) -> str:
        return (f"NVIDIA pytorch_backend {self.branch} built from source for tritonserver {self.server_version} and "
                f"torch {self.torch_version} ({self.library})")

    @classmethod
    def read(cls, folder: Path) -> "BuiltBackend | None":
        try:
            data = json.loads((folder / RECORD).read_text())
            built = cls(folder=folder, **{k: v for k, v in data.items() if k != "folder"})
        except (OSError, ValueError, TypeError):
            return None
        return built if built.library.is_file() else None


def cached_builds(cache: str | os.PathLike | None = None) -> list[BuiltBackend]:
    root = cache_dir(CACHE_KIND, cache)
    found = [BuiltBackend.read(p) for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    return [b for b in found if b is not None]


def find_built_backend(binary: TritonBinary, branch: str | None = None,
                       cache: str | os.PathLike | None = None) -> BuiltBackend | None:
    """The newest cached build usable by ``binary`` with the running torch (``branch`` when given, else any)."""
    libtorch = installed_libtorch()
    usable = [b for b in cached_builds(cache)
              if b.server_version == binary.version and b.torch_version == libtorch.version
              and b.torch_lib == str(libtorch.lib) and (branch is None or b.branch == branch)]
    if not usable:
        return None
    try:  # the server's own release branch first, then the newest build
        preferred = branch_for(binary.version)
    except BackendBuildError:
        preferred = None
    return max(usable, key=lambda b: (b.branch == preferred, b.built_at))
