"""Exports on NVIDIA's newest pytorch_backend (branch main, built by the test set-up) beside its release for the
bundled server (r24.10), both in the same tritonserver 2.51: an exported repository must load on every release.

- What tei-export writes (a padded export with the text ensemble, a ragged export with its BLS text model) loads
  READY on main, and verify passes over HTTP and gRPC, naming main as what served the token models.
- The same token requests give the same rows on both releases.
- Two models that both set INTER_OP_THREAD_COUNT, which abort r24.10 (tests/test_differential.py), load on main: it
  sets the count once per process. The server still warns, since the repository would crash an older server.
"""
from __future__ import annotations

import numpy as np
import pytest

import _triton_fixtures as fx
from exporter.export.pipeline import ExportOptions, export_model
from exporter.tokens import encode_batch, load_tokenizer
from exporter.triton.server import TritonServer
from exporter.triton_client import TritonClient
from exporter.checks.verify import verify_repository

NEWEST = "nvidia:main"  # the branch the test set-up builds (see the newest_backend fixture)


@pytest.fixture(scope="module")
def repo(minilm, tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo_newest")
    export_model(minilm, ExportOptions(out=repo, name="mp", max_batch_size=16, with_tokenizer=True,
                                       tokenizer="python"))
    export_model(minilm, ExportOptions(out=repo, name="mr", batching="ragged", max_batch_size=64,
                                       with_tokenizer=True, tokenizer="python"))
    return repo


def test_exports_verify_on_the_newest_backend(newest_backend, repo):
    report = verify_repository(repo, corpus_size=16, libtorch=False, server_options={"backend": NEWEST})
    assert report.passed, report.table()
    assert {c.model for c in report.checks} == {"mp", "mp_text", "mr", "mr_text"}
    for check in report.checks:
        assert "libtriton_pytorch.so (main)" in check.served_by, (check.model, check.served_by)


def test_both_releases_give_the_same_rows(binary, nvidia_backend, newest_backend, repo, st_model, tmp_path):
    tokenizer = load_tokenizer(repo / "mr" / "1")
    padded = fx.tokenize(st_model, fx.SENTENCES)
    ragged = [encode_batch(tokenizer, [s], 128, ["input_ids"]) for s in fx.SENTENCES]
    rows = {}
    for backend in ("nvidia", NEWEST):
        with TritonServer(repo, binary=binary, backend=backend, model_control_mode="explicit",
                          load_models=["mp", "mr"], log_path=tmp_path / f"{backend}.log") as server:
            assert server.backends.branch == ("main" if backend == NEWEST else nvidia_backend.branch)
            with TritonClient(server.http_url, "http") as client:
                rows[backend] = (client.infer("mp", padded, ["embedding"])["embedding"],
                                 np.concatenate([client.infer("mr", r, ["embedding"])["embedding"] for r in ragged]))
    for old, new in zip(rows["nvidia"], rows[NEWEST]):
        assert old.shape == (len(fx.SENTENCES), 384)
        assert np.abs(old - new).max() <= 1e-6


def test_two_inter_op_setters_load_on_the_newest_backend(binary, newest_backend, tmp_path):
    repo = tmp_path / "interop"
    fx.write_interop_models(repo)
    x = np.array([[1.0, -2.0]], dtype=np.float32)
    with TritonServer(repo, binary=binary, backend=NEWEST, log_path=tmp_path / "triton.log") as server:
        assert set(server.models) == {"interop_0", "interop_1"}
        assert any("interop_0, interop_1 all set INTER_OP_THREAD_COUNT" in w for w in server.warnings)
        with TritonClient(server.http_url, "http") as client:
            for name in server.models:
                assert client.infer(name, {"x": x}, ["y"])["y"].tolist() == [[2.0, -4.0]]
