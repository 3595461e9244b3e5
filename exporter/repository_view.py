"""What ``--model-repository`` points at: the repository itself, or a view of it that an older server can load.

Triton releases before 26.03 refuse ``platform: "torch_aoti"`` ("unexpected platform type"). When tei-export's
compatibility backend serves the pytorch backend anyway (no ``libtriton_pytorch.so``), such a model can be presented
as ``backend: "pytorch"`` with ``default_model_filename: "model.pt2"``: the compatibility backend then loads the
package with AOTInductor's loader. The view is a temporary folder of symbolic links plus the rewritten
``config.pbtxt`` files; the exported repository itself is never changed, so it stays what a 26.03+ server wants.
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError
from .pt2 import PT2_FILENAME, PT2_MIN_TRITON, PT2_PLATFORM
from .repository import models
from .triton_config import read_config


@dataclass(frozen=True)
class RepositoryView:
    root: Path  # the folder the server is given
    presented: tuple[str, ...] = ()  # torch_aoti models shown as backend "pytorch" (empty: root is the repository)

    @property
    def temporary(self) -> bool:
        return bool(self.presented)

    def describe(self) -> str:
        if not self.presented:
            return ""
        return (f"torch_aoti model(s) {', '.join(self.presented)} presented to this server as backend \"pytorch\" "
                f"with {PT2_FILENAME}, served by the compatibility backend through AOTInductor's loader (Triton "
                f"{PT2_MIN_TRITON}+ loads them as exported); the exported config.pbtxt files are unchanged")

    def remove(self) -> None:
        if self.temporary:
            shutil.rmtree(self.root, ignore_errors=True)


def legacy_config_text(path: Path) -> str:
    """The config at ``path`` with ``platform: "torch_aoti"`` replaced by ``backend: "pytorch"`` and the package as
    the model file, as text a pre-26.03 server accepts."""
    from google.protobuf import text_format

    config = read_config(path)
    config.platform = ""
    config.backend = "pytorch"
    config.default_model_filename = config.default_model_filename or PT2_FILENAME
    return f"# tei-export: presented from {path} for a server without torch_aoti\n" + \
        text_format.MessageToString(config)


def _platform(path: Path) -> str:
    """The config's platform; "" when it does not parse, which is Triton's to report in its own words."""
    try:
        return read_config(path).platform
    except ConfigError:
        return ""


def present_repository(repo: Path, compat_backend: bool) -> RepositoryView:
    """``repo`` itself unless the compatibility backend is in use and ``repo`` holds torch_aoti models; then a
    temporary view (call :meth:`RepositoryView.remove` when the server is gone)."""
    repo = Path(repo).absolute()
    if not compat_backend:
        return RepositoryView(repo)
    aoti = [m for m in models(repo) if _platform(m / "config.pbtxt") == PT2_PLATFORM]
    if not aoti:
        return RepositoryView(repo)
    root = Path(tempfile.mkdtemp(prefix="tei-export-view-"))
    for entry in sorted(repo.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry not in aoti:
            (root / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
            continue
        (root / entry.name).mkdir()
        for child in entry.iterdir():
            if child.name != "config.pbtxt":
                (root / entry.name / child.name).symlink_to(child, target_is_directory=child.is_dir())
        (root / entry.name / "config.pbtxt").write_text(legacy_config_text(entry / "config.pbtxt"), encoding="utf-8")
    return RepositoryView(root, tuple(m.name for m in aoti))
