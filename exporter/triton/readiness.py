"""What a starting server's model repository index says: which models it should load, which are still loading, and
why each one that is not READY failed (in the server's own words, with the model file it read)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .server_log import first_paragraph, model_error_lines


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


def model_file_note(repository: Path, name: str, version: str | None) -> str:
    """" (model file PATH, N bytes)", so a load error names the file it read: NVIDIA's backend says only
    "failed to load model 'x': PytorchStreamReader failed ..."."""
    from ..export.repository import model_file

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
            else:
                reasons.append(f"'{name}': not loaded (state {versions[0].get('state') or 'none'})")
        failed.extend(reasons)
    return failed
