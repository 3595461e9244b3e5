"""The LibTorch (C++ headers and libraries) that ships inside the installed ``torch`` wheel: what the C++ check and
NVIDIA's backend are compiled and linked against."""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LibTorch:
    version: str
    root: Path  # site-packages/torch
    cxx11_abi: int  # torch's _GLIBCXX_USE_CXX11_ABI, which the code linked against it must use too

    @property
    def include(self) -> Path:
        return self.root / "include"

    @property
    def include_dirs(self) -> tuple[Path, Path]:
        return self.include, self.include / "torch" / "csrc" / "api" / "include"

    @property
    def lib(self) -> Path:
        return self.root / "lib"


def installed_libtorch() -> LibTorch:
    import torch

    return LibTorch(torch.__version__, Path(torch.__file__).resolve().parent, int(torch.compiled_with_cxx11_abi()))


def find_compiler() -> str | None:
    """The C++ compiler to use: ``$CXX`` when set (and only it), else ``g++`` or ``c++`` on PATH; None if none."""
    chosen = os.environ.get("CXX")
    if chosen:
        return shutil.which(chosen)
    for name in ("g++", "c++"):
        found = shutil.which(name)
        if found:
            return found
    return None
