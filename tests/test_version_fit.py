"""Adding a version (--version N) to a model: Triton serves all its versions with one config.pbtxt, so an export
whose config differs in what they share (inputs, outputs, batching, backend) is refused, naming the difference, and
the repository is left as it was; one that differs only in what may change (instances, threads) is added."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from model_factory import random_model

from exporter.errors import RepositoryError
from exporter.export.pipeline import ExportOptions, export_model
from exporter.export.version_fit import shared_differences


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return random_model(tmp_path_factory.mktemp("src") / "bert", "bert", max_seq_length=32)


def _tree(repo: Path) -> dict[str, str]:
    return {str(p.relative_to(repo)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(repo.rglob("*")) if p.is_file()}


def test_a_version_that_does_not_fit_is_refused(source, tmp_path):
    repo = tmp_path / "repo"
    export_model(source, ExportOptions(out=repo, name="tiny", max_batch_size=4, with_tokenizer=True))
    before = _tree(repo)
    with pytest.raises(RepositoryError) as ragged:
        export_model(source, ExportOptions(out=repo, name="tiny", version=2, max_batch_size=4, with_tokenizer=True,
                                           batching="ragged"))
    text = str(ragged.value)
    assert "version 2 of model 'tiny' does not fit its version(s) 1" in text
    assert "input input_ids" in text and "allow_ragged_batch: true" in text and "batch_input" in text
    assert "--name tiny_v2" in text
    with pytest.raises(RepositoryError, match=r"max_batch_size: 4 -> 8"):
        export_model(source, ExportOptions(out=repo, name="tiny", version=2, max_batch_size=8))
    assert _tree(repo) == before  # nothing written, nothing half-written
    export_model(source, ExportOptions(out=repo, name="tiny", version=2, max_batch_size=4, with_tokenizer=True,
                                       instances=2))
    assert (repo / "tiny" / "2" / "model.pt").is_file() and (repo / "tiny_text" / "2").is_dir()
    assert "count: 2" in (repo / "tiny" / "config.pbtxt").read_text()


def test_shared_differences_names_fields(source, tmp_path):
    result = export_model(source, ExportOptions(out=tmp_path / "repo", name="tiny", max_batch_size=4))
    config = (result.target.model_dir / "config.pbtxt").read_text()
    assert shared_differences(config, config) == []
    assert shared_differences(config, config.replace("count: 1", "count: 3")) == []  # instances may change
    wider = config.replace('name: "embedding"', 'name: "sentence_embedding"')
    found = shared_differences(config, wider)
    assert [d.split(":")[0] for d in found] == ["output embedding", "output sentence_embedding"], found
    assert found[0].endswith("-> none") and found[1].startswith("output sentence_embedding: none -> {")
