"""A model's name when the folder it was exported from says nothing (``model``, ``snapshot``, a commit hash): the
Hugging Face cache's ``models--ORG--NAME`` folder above it, else the title of its model card, else the name its
config was saved from (``_name_or_path``)."""
from __future__ import annotations

import json
import re
from pathlib import Path

# Folder names that name no model: what hubs, trainers and packages call the folder that holds the files.
_GENERIC = {"model", "models", "snapshot", "snapshots", "main", "latest", "current", "checkpoint", "checkpoints",
            "final", "best", "output", "outputs", "export", "exported", "hf", "hub", "weights", "files", "artifacts",
            "pytorch", "transformers", "sentence-transformers", "src", "source", "tmp"}
_HASH = re.compile(r"^(?:[0-9a-f]{7,64}|\d+)$")  # a commit or content hash, a bare version or step number
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")  # one word a model is called by
_CACHE = re.compile(r"^models--(?:[^-].*?--)?(.+)$")  # huggingface_hub's cache: models--ORG--NAME


def says_nothing(folder_name: str) -> bool:
    return folder_name.lower() in _GENERIC or bool(_HASH.match(folder_name.lower()))


def _card_title(folder: Path) -> str | None:
    """The model card's first ``# title`` when it is one word (sentence-transformers cards start "# all-MiniLM-L6-v2";
    generated ones, "# SentenceTransformer based on ...", name no model)."""
    try:
        text = (folder / "README.md").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    if text.startswith("---"):  # YAML front matter: metadata, not the title
        text = text[3:].split("\n---", 1)[-1] if "\n---" in text[3:] else ""
    for line in text.splitlines():
        if line.startswith("# "):
            title = line[2:].strip()
            return title if _NAME.match(title) else None
    return None


def _saved_from(folder: Path) -> str | None:
    """The last part of config.json's ``_name_or_path`` when it names a hub model. Fine-tuned models often keep the
    base model's name there (all-MiniLM-L6-v2 says nreimers/MiniLM-L6-H384-uncased), so the card comes first."""
    try:
        value = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("_name_or_path")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(value, str) or not value or value.startswith(("/", ".", "~")):
        return None
    last = value.rstrip("/").rsplit("/", 1)[-1]
    return last if _NAME.match(last) and not says_nothing(last) else None


def name_from_folder(folder: Path) -> str | None:
    """The model's own name for a local ``folder`` whose name says nothing; None when the folder's name will do or
    nothing better is found."""
    folder = folder.absolute()
    if not says_nothing(folder.name):
        return None
    for parent in folder.parents:  # .../models--BAAI--bge-small-en-v1.5/snapshots/<hash>
        match = _CACHE.match(parent.name)
        if match:
            return match.group(1)
    return _card_title(folder) or _saved_from(folder)
