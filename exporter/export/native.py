"""Checkpoints that name remote code (``auto_map``) but whose architecture has a native transformers class.

Alibaba's GTE checkpoints say ``model_type: "new"`` with their own modelling code, nomic's say ``nomic_bert`` with
theirs; the pinned transformers has native classes for both. Rather than run code from the checkpoint, the export
loads its weights with the native class: a folder in tei-export's cache links every file of the checkpoint and
holds a config.json naming the native model_type without ``auto_map``. The weights must map exactly (no missing,
no unexpected keys); otherwise the native class computes something else, and the error names the keys and says
that ``--trust-remote-code`` is the way. A checkpoint with task adapters (jina-embeddings-v3) gets the chosen task's
adapter merged into a weights file of its own here (adapters.py); its other files are linked.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from ..cache import cache_dir, install
from ..errors import UnsupportedModelError
from .adapters import write_merged

_COMPLETE = ".complete"


def native_folder(model_dir: Path, config: dict, model_type: str, task: str | None = None) -> Path:
    """A cached folder that loads ``model_dir``'s checkpoint with the native ``model_type`` class, with ``task``'s
    adapter merged into the weights when the checkpoint has task adapters (adapters.py)."""
    patched = {k: v for k, v in config.items() if k not in ("auto_map", "architectures")}
    patched["model_type"] = model_type
    if "rotary_emb_base" in config and not config.get("rope_parameters"):
        # the remote code's rotary base; the native classes read rope_parameters and would otherwise take their
        # family's published default (jina-embeddings-v3: 20,000; nomic: 1,000) whatever a checkpoint says
        patched["rope_parameters"] = {"rope_type": "default", "rope_theta": float(config["rotary_emb_base"])}
    stamp = _weights_stamp(model_dir) if task else ""
    key = hashlib.sha256(f"{model_dir.resolve()}\0{json.dumps(patched, sort_keys=True)}\0{task}\0{stamp}"
                         .encode()).hexdigest()[:16]
    root = cache_dir("native")
    target = root / key
    if (target / _COMPLETE).is_file():
        return target
    staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
    try:
        replaced = write_merged(model_dir, staging, config, task) if task else []
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    for item in model_dir.iterdir():
        if item.name != "config.json" and item.name not in replaced:
            os.symlink(item.resolve(), staging / item.name)
    (staging / "config.json").write_text(json.dumps(patched, indent=2), encoding="utf-8")
    (staging / _COMPLETE).touch()
    return install(staging, target, _COMPLETE)


def _weights_stamp(model_dir: Path) -> str:
    """The checkpoint files' sizes and times: a merged copy is rebuilt when the weights change."""
    return ";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in sorted(model_dir.iterdir())
                    if p.is_file())


def check_weights_map(loading_info: dict, model_dir: Path, model_type: str) -> None:
    """Refuse a checkpoint whose weights do not map one to one onto the native class."""
    missing = sorted(loading_info.get("missing_keys") or ())
    unexpected = sorted(loading_info.get("unexpected_keys") or ())
    if missing or unexpected:
        shown = [f"missing: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}"] if missing else []
        shown += [f"unexpected: {', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''}"] \
            if unexpected else []
        raise UnsupportedModelError(
            f"the checkpoint ships its own modelling code (auto_map), and its weights do not map onto transformers' "
            f"native '{model_type}' class ({'; '.join(shown)})",
            fix="pass --trust-remote-code if you trust the checkpoint's code", where=str(model_dir / "config.json"))
