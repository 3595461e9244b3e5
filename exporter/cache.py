"""tei-export's cache folder (``$TEI_EXPORT_CACHE``, else ``$XDG_CACHE_HOME/tei-export``, else
``~/.cache/tei-export``) and all-or-nothing installs into it.

Everything in it can be rebuilt: assembled backend folders (``backend-dirs/``), NVIDIA's backend built from source
(``nvidia-pytorch-backend/``) and the compiled C++ check (``libtorch_check-*``). Deleting the folder is safe.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

CACHE_ENV = "TEI_EXPORT_CACHE"


def cache_root() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tei-export"


def cache_dir(kind: str, root: str | os.PathLike | None = None) -> Path:
    """``<root>/<kind>``, created; a per-user temp folder when the cache cannot be written (a read-only home)."""
    folder = Path(root) if root is not None else cache_root() / kind
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError:
        user = os.getuid() if hasattr(os, "getuid") else "user"
        folder = Path(tempfile.gettempdir()) / f"tei-export-{user}" / kind
        folder.mkdir(parents=True, exist_ok=True)
    return folder


def install(staging: Path, target: Path, complete_marker: str = ".complete") -> Path:
    """Move a finished ``staging`` folder to ``target`` in one rename. When another process installed ``target``
    first, its copy is kept and ours discarded: readers never see half a folder."""
    try:
        os.rename(staging, target)
    except OSError:
        if not (target / complete_marker).is_file():
            raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target
