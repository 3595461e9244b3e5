"""What a starting server's model repository index says: which models it should load, which are still loading, and
why each one that is not READY failed (in the server's own words, with the model file it read)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..export.repository import versions
from ..export.triton_config import read_config
from .backends import COMPAT_BACKEND_NAME
from .server_log import error_lines, first_paragraph, model_error_lines

# The file each platform or backend loads when a config names none: Triton's defaults, and the compatibility
# backend's under the name it is presented as.
DEFAULT_MODEL_FILES = {"pytorch_libtorch": "model.pt", "torch_aoti": "model.pt2", "pytorch": "model.pt",
                       COMPAT_BACKEND_NAME: "model.pt", "python": "model.py"}


def expected_models(mode: str, load_models: Sequence[str], index: list[dict], repository: Path) -> list[str]:
    """The models a server in model-control ``mode`` loads at start (``load_models``: its --load-model names)."""
    if mode == "explicit" and "*" not in load_models:
        return sorted(set(load_models))
    names = {e["name"] for e in index if e.get("name")}
    if mode == "explicit":  # --load-model=* loads every folder
        return sorted(names)
    # every folder of the repository is a model to Triton, even one it could not list (no version folder)
    names.update(p.name for p in repository.iterdir() if p.is_dir() and not p.name.startswith("."))
    return sorted(names)


def by_name(index: list[dict]) -> dict[str, list[dict]]:
    """The index's entries (one per model version) grouped by model name."""
    grouped: dict[str, list[dict]] = {}
    for entry in index:
        grouped.setdefault(entry.get("name", ""), []).append(entry)
    return grouped


def still_loading(expected: Sequence[str], entries: dict[str, list[dict]]) -> list[str]:
    return [n for n in expected if any(e.get("state") == "LOADING" for e in entries.get(n, []))]


def model_file(model_dir: Path, version: str | None = None) -> Path | None:
    """The file the model in ``model_dir`` loads (``version``, else its latest), or None when it cannot be told
    (no readable config, no version, no such file)."""
    try:
        config = read_config(model_dir / "config.pbtxt")
    except Exception:  # a config Triton cannot read either: its own error says so
        return None
    filename = (config.default_model_filename or DEFAULT_MODEL_FILES.get(config.platform)
                or DEFAULT_MODEL_FILES.get(config.backend))
    found = versions(model_dir)
    number = version if version and version.isdigit() else (str(found[-1]) if found else None)
    if not filename or number is None:
        return None
    path = model_dir / number / filename
    return path if path.is_file() else None


def model_file_note(repository: Path, name: str, version: str | None) -> str:
    """" (model file PATH, N bytes)", so a load error names the file it read: NVIDIA's backend says only
    "failed to load model 'x': PytorchStreamReader failed ..."."""
    path = model_file(repository / name, version)
    return f" (model file {path}, {path.stat().st_size} bytes)" if path is not None else ""


def load_failures(expected: Sequence[str], entries: dict[str, list[dict]], log: str, repository: Path) -> list[str]:
    """One line per expected model that is not READY: the index's reason, else the log's errors for it, else its
    state (or that the repository has no such model)."""
    failed = []
    for name in expected:
        versions = entries.get(name, [])
        if any(e.get("state") == "READY" for e in versions):
            continue
        reasons = []
        for e in versions:
            if e.get("reason"):
                version = f" version {e['version']}" if e.get("version") else ""
                reasons.append(f"'{name}'{version}: {first_paragraph(e['reason'])}"
                               f"{model_file_note(repository, name, e.get('version'))}")
        if not reasons:
            found = model_error_lines(log, name)
            if found:
                reasons.append(f"'{name}': {found}")
            elif not versions:
                reasons.append(f"'{name}': not found in the model repository")
            else:  # the log's errors may still say why, without naming the model
                others = error_lines(log, limit=3)
                reasons.append(f"'{name}': not loaded (state {versions[0].get('state') or 'none'})"
                               + (f"; the server's last errors: {others}" if others else ""))
        failed.extend(reasons)
    return failed
