"""The memory allocator a tritonserver runs with. glibc's malloc fragments on the many tensor sizes that ragged and
mixed-length batches make: a ragged MiniLM soak on NVIDIA's backend grew the server's RSS 6.4 % after warm-up (and
still climbing) where the same run with jemalloc preloaded stayed flat, as NVIDIA's Triton documentation warns for
the PyTorch backend. So every server tei-export starts preloads Debian's libjemalloc2 (the set-up installs it),
unless told not to (``--allocator system``, ``TEI_EXPORT_ALLOCATOR=system``)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from ..errors import ServerError

ALLOCATOR_ENV = "TEI_EXPORT_ALLOCATOR"
ALLOCATORS = ("jemalloc", "system")
JEMALLOC = "libjemalloc.so.2"
# Where Debian/Ubuntu (libjemalloc2), Fedora/RHEL (jemalloc) and Alpine put it.
_SEARCH = (Path("/usr/lib/x86_64-linux-gnu"), Path("/usr/lib/aarch64-linux-gnu"), Path("/usr/lib64"), Path("/usr/lib"),
           Path("/usr/local/lib"))
INSTALL_HINT = "apt-get install libjemalloc2 (Debian/Ubuntu; scripts/env.sh does it), or dnf install jemalloc"


@dataclass(frozen=True)
class Allocator:
    """What a server is started with: ``library`` preloaded, or None for glibc's malloc, and why."""

    name: str  # "jemalloc" or "system"
    library: Path | None
    why: str
    missing: bool = False  # jemalloc was wanted but is not installed

    def describe(self) -> str:
        if self.library is not None:
            return f"jemalloc preloaded ({self.library}; --allocator system or ${ALLOCATOR_ENV}=system turns it off)"
        return f"glibc malloc ({self.why})"

    def environment(self, env: Mapping[str, str]) -> dict[str, str]:
        """``env`` with the library first in LD_PRELOAD (what the user preloads stays, after it)."""
        out = dict(env)
        if self.library is not None:
            rest = [p for p in out.get("LD_PRELOAD", "").replace(":", " ").split() if p and p != str(self.library)]
            out["LD_PRELOAD"] = ":".join([str(self.library), *rest])
        return out


def find_jemalloc(search: tuple[Path, ...] = _SEARCH) -> Path | None:
    return next((folder / JEMALLOC for folder in search if (folder / JEMALLOC).is_file()), None)


def choose_allocator(choice: str | None = None, env: Mapping[str, str] | None = None,
                     search: tuple[Path, ...] = _SEARCH) -> Allocator:
    """``choice`` (else ``$TEI_EXPORT_ALLOCATOR``, else jemalloc) -> :class:`Allocator`. jemalloc that is not
    installed falls back to glibc's malloc with the reason (the server still runs; its memory may creep)."""
    source = "--allocator"
    if choice is None:
        choice, source = (env if env is not None else os.environ).get(ALLOCATOR_ENV) or "jemalloc", f"${ALLOCATOR_ENV}"
    if choice not in ALLOCATORS:
        raise ServerError(f"unknown allocator '{choice}'", fix=f"use one of {', '.join(ALLOCATORS)}", where=source)
    if choice == "system":
        return Allocator("system", None, f"chosen by {source}")
    library = find_jemalloc(search)
    if library is None:
        return Allocator("system", None, f"{JEMALLOC} is not installed: {INSTALL_HINT}", missing=True)
    return Allocator("jemalloc", library, "default")
