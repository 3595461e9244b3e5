"""What ``--model-repository`` points at: the repository itself, or a view of it that an older server can load.

Triton releases before 26.03 refuse ``platform: "torch_aoti"`` ("unexpected platform type"), and NVIDIA's r24.10
LibTorch backend has no pt2 path. When tei-export assembled the backend folder, it holds the compatibility backend
under a name of its own (``tei_export_compat``), so such a model can be presented as ``backend: "tei_export_compat"``
with ``default_model_filename: "model.pt2"``: the compatibility backend then loads the package with AOTInductor's
loader, beside NVIDIA's backend serving the TorchScript models. The view is a temporary folder of symbolic links plus
the rewritten ``config.pbtxt`` files; the exported repository itself is never changed, so it stays what a 26.03+
server wants.
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..export.pt2 import PT2_FILENAME, PT2_MIN_TRITON, PT2_PLATFORM
from ..export.repository import models
from ..export.triton_config import read_config


@dataclass(frozen=True)
class RepositoryView:
    root: Path  # the folder the server is given
    presented: tuple[str, ...] = ()  # torch_aoti models shown under ``backend``
    backend: str = ""
    python_models: tuple[str, ...] = ()  # Python-backend models whose version folders are the view's own
    temporary: bool = False  # False: root is the repository itself

    def describe(self) -> str:
        if not self.presented:
            return ""
        return (f"torch_aoti model(s) {', '.join(self.presented)} presented to this server as backend "
                f"\"{self.backend}\" with {PT2_FILENAME}: the compatibility backend serves them through AOTInductor's "
                f"loader, since this server refuses platform torch_aoti and NVIDIA's backend for it has no pt2 path "
                f"(Triton {PT2_MIN_TRITON}+ loads them as exported); the exported config.pbtxt files are unchanged")

    def remove(self) -> None:
        if self.temporary:
            shutil.rmtree(self.root, ignore_errors=True)


def legacy_config_text(path: Path, backend: str) -> str:
    """The config at ``path`` with ``platform: "torch_aoti"`` replaced by ``backend`` and the package as the model
    file, as text a pre-26.03 server accepts."""
    from google.protobuf import text_format

    config = read_config(path)
    config.platform = ""
    config.backend = backend
    config.default_model_filename = config.default_model_filename or PT2_FILENAME
    return f"# tei-export: presented from {path} for a server without torch_aoti\n" + \
        text_format.MessageToString(config)


def _config(path: Path):
    """The parsed config, or None when it does not parse (Triton reports that in its own words)."""
    try:
        return read_config(path)
    except ConfigError:
        return None


def _link_children(source: Path, dest: Path, skip: tuple[str, ...] = ()) -> None:
    dest.mkdir()
    for child in sorted(source.iterdir()):
        if child.name not in skip:
            (dest / child.name).symlink_to(child, target_is_directory=child.is_dir())


def present_repository(repo: Path, aoti_backend: str | None) -> RepositoryView:
    """``repo`` itself, unless it holds torch_aoti models to present under ``aoti_backend`` or Python-backend models;
    then a temporary view (call :meth:`RepositoryView.remove` when the server is gone).

    A Python-backend model (the text pipeline's tokenizer) gets version folders of the view's own, holding links to
    its files: the stub imports ``model.py`` by the view's path, so Python's ``__pycache__`` lands in the view, not in
    the exported repository (the stub's embedded Python ignores PYTHONDONTWRITEBYTECODE)."""
    repo = Path(repo).absolute()
    configs = {m: _config(m / "config.pbtxt") for m in models(repo)}
    aoti = [m for m, c in configs.items() if aoti_backend and c is not None and c.platform == PT2_PLATFORM]
    python = [m for m, c in configs.items() if c is not None and c.backend == "python"]
    if not aoti and not python:
        return RepositoryView(repo)
    root = Path(tempfile.mkdtemp(prefix="tei-export-view-"))
    for entry in sorted(repo.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry in aoti:
            _link_children(entry, root / entry.name, skip=("config.pbtxt",))
            (root / entry.name / "config.pbtxt").write_text(
                legacy_config_text(entry / "config.pbtxt", aoti_backend or ""), encoding="utf-8")
        elif entry in python:
            versions = tuple(v.name for v in entry.iterdir() if v.is_dir() and v.name.isdigit())
            _link_children(entry, root / entry.name, skip=versions)
            for version in versions:
                _link_children(entry / version, root / entry.name / version)
        else:
            (root / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    return RepositoryView(root, tuple(m.name for m in aoti), aoti_backend or "", tuple(m.name for m in python),
                          temporary=True)
