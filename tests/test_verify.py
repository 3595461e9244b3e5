"""tei-export verify against a real tritonserver: parity over HTTP and gRPC, batching, and detected mismatches."""
from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from conftest import no_fallback_under_ci, require
from exporter.cli import main
from exporter.errors import VerificationError
from exporter.export.pipeline import ExportOptions, export_model
from exporter.triton.server import TritonServer
from exporter.checks.verify import Run, verify_repository

RUNS = (Run(1, 1), Run(8, 1), Run(1, 6))


@pytest.fixture(scope="module")
def repo(tmp_path_factory, minilm_export, bge_like):
    repo = tmp_path_factory.mktemp("verify_repo")
    shutil.copytree(minilm_export.target.model_dir, repo / "minilm")
    export_model(bge_like, ExportOptions(out=repo, name="bge-small-like", max_batch_size=8))
    return repo


@pytest.fixture(scope="module")
def server(repo):
    with TritonServer(repo) as srv:
        yield srv


def test_minilm_and_bge_shape_parity_over_http_and_grpc(repo, server):
    report = verify_repository(repo, url=server.http_url, protocols=("http",), corpus_size=24, runs=RUNS,
                               libtorch=False)
    report_grpc = verify_repository(repo, url=server.grpc_url, protocols=("grpc",), corpus_size=24, runs=RUNS,
                                    libtorch=False)
    checks = report.checks + report_grpc.checks
    assert {(c.model, c.protocol) for c in checks} == {(m, p) for m in ("minilm", "bge-small-like")
                                                       for p in ("http", "grpc")}
    for check in checks:
        assert check.passed, report.table() + report_grpc.table()
        assert check.max_abs_diff <= 1e-5 and check.min_cosine >= 0.99999
        assert check.texts >= 24 + 7  # the docstring sentences and every edge case
        # concurrent, bucket-padded requests were merged by the dynamic batcher
        assert check.executions < check.inferences
    assert report.passed and "verdict: PASS" in report.table()


def test_verify_starts_its_own_server_and_checks_libtorch(repo):
    report = verify_repository(repo, names=["minilm"], corpus_size=8, runs=(Run(4, 2),))
    assert report.passed, report.table()
    assert "tritonserver 2." in report.server and "LibTorch backend" in report.server
    assert [c.protocol for c in report.checks] == ["http", "grpc"]
    # the report names what served the model, as the server itself reports the model's config
    compat = "compatibility backend (Python, model.py)" in report.server
    no_fallback_under_ci(compat)
    for check in report.checks:
        assert check.served_by == ("compatibility backend (model.py)" if compat else
                                   "NVIDIA C++ libtriton_pytorch.so (r24.10)"), check.served_by
    assert f"minilm served by {report.checks[0].served_by}" in report.table()
    (lt,) = report.libtorch
    require(not lt["skipped"], f"verify skipped its C++ check: {lt['skip_reason']}", part="compiler")
    assert lt["ok"] and lt["max_abs_diff"] <= 1e-5


def test_cli_verify_against_running_server(repo, server):
    res = CliRunner().invoke(main, ["verify", str(repo), "--url", server.grpc_url, "--protocol", "grpc",
                                    "--model", "minilm", "--corpus-size", "8", "--no-libtorch-check", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["passed"] and data["checks"][0]["protocol"] == "grpc"


def test_mismatch_is_detected(tmp_path, minilm):
    # Export without normalisation, then claim normalisation in the metadata: Triton's rows now differ from
    # the eager reference, and verify must say so with a non-zero exit.
    repo = tmp_path / "repo"
    export_model(minilm, ExportOptions(out=repo, name="raw", normalize=False, max_batch_size=4))
    meta_path = repo / "raw" / "1" / "tei_export.json"
    meta = json.loads(meta_path.read_text())
    meta["normalize"] = True
    meta_path.write_text(json.dumps(meta))
    res = CliRunner().invoke(main, ["verify", str(repo), "--protocol", "http", "--corpus-size", "4",
                                    "--no-libtorch-check"])
    assert res.exit_code != 0
    assert "FAIL" in res.output and "differ from eager sentence-transformers" in res.output


def test_unknown_model_and_url_without_protocol(repo):
    with pytest.raises(VerificationError, match="no exported model named nope"):
        verify_repository(repo, names=["nope"])
    with pytest.raises(VerificationError, match="--protocol"):
        verify_repository(repo, url="127.0.0.1:1", protocols=("http", "grpc"))
