"""`check-libtorch`, `bench --quick`, `tune` and `serve` as a user runs them, on the session's small random exports
(tests/conftest.py's options_repo): exit codes, what they print, the files they write, and what a server started
from what they wrote or on the ports they were given answers, compared with sentence-transformers.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from exporter.cli import main
from exporter.export.triton_config import parse_pbtxt
from exporter.triton.process import free_port
from exporter.triton.server import TritonServer
from exporter.triton_client import TritonClient

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["Triton serves TorchScript models.", "Embeddings!", "a much longer sentence than the other two, padded"]


@pytest.fixture(scope="module")
def reference(tiny_models):
    """The rows every mean-pooled, normalized export of the ``bert`` model must give for TEXTS."""
    import _triton_fixtures as fx

    st = fx.load_sentence_transformer(tiny_models["bert"])
    return st, st.encode(TEXTS, convert_to_numpy=True)


def _close(got, expected, max_abs=1e-5):
    assert got.shape == expected.shape and float(np.abs(got - expected).max()) <= max_abs


# ------------------------------------------------------------------------------------------------ check-libtorch
LINE = re.compile(r"^(\w+): ok in LibTorch C\+\+ \((\d+) calls, (\d+) rows\): max\|diff\| (\S+), min cosine (\S+)$",
                  re.M)


def test_check_libtorch_passes_a_good_export(cxx_compiler, options_repo):
    res = CliRunner().invoke(main, ["check-libtorch", str(options_repo / "plain")])
    assert res.exit_code == 0, res.output
    found = LINE.search(res.output)
    assert found and found.group(1) == "plain", res.output
    assert int(found.group(2)) > 0 and int(found.group(3)) > 0
    assert float(found.group(4)) <= 1e-5 and float(found.group(5)) >= 0.99999


@pytest.mark.parametrize("name", ["i32", "tokens"])
def test_check_libtorch_json_on_int32_and_token_embeddings(cxx_compiler, options_repo, name):
    res = CliRunner().invoke(main, ["check-libtorch", str(options_repo / name), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["ok"] and not report["skipped"] and report["model_name"] == name and report["format"] == "torchscript"
    assert report["max_abs_diff"] <= 1e-5 and report["min_cosine"] >= 0.99999 and report["rows"] > 0


def test_check_libtorch_fails_a_model_file_that_computes_something_else(cxx_compiler, options_repo, tmp_path):
    """plain's metadata with cls's model.pt (same shapes, CLS pooling instead of mean): exit 1, FAIL, the fix."""
    bad = tmp_path / "plain"
    shutil.copytree(options_repo / "plain", bad)
    shutil.copy2(options_repo / "cls" / "1" / "model.pt", bad / "1" / "model.pt")
    res = CliRunner().invoke(main, ["check-libtorch", str(bad)])
    assert res.exit_code == 1, res.output
    assert "plain: FAIL in LibTorch C++" in res.output
    assert "error: the model's output in LibTorch C++ differs from eager sentence-transformers" in res.output
    assert "Fix: re-export the model" in res.output


def test_check_libtorch_says_why_it_skips_a_ragged_export(options_repo):
    res = CliRunner().invoke(main, ["check-libtorch", str(options_repo / "i32_ragged")])
    assert res.exit_code == 0 and res.output.startswith("skipped: ") and "ragged" in res.output, res.output


# ------------------------------------------------------------------------------------------------ bench --quick
def test_bench_quick_writes_its_results(options_repo, nvidia_backend, tmp_path):
    """The smallest bench run: one workload, in-process TorchScript and eager, Triton over gRPC and HTTP and the
    repository's ragged export of the same source (i32_ragged, --int32 beside an INT64 padded export)."""
    out = tmp_path / "bench"
    res = CliRunner().invoke(main, ["bench", str(options_repo), "--model", "plain", "--quick", "--workload", "short",
                                    "--no-bf16", "--no-pt2", "--no-onnx", "--no-infinity", "--backend", "nvidia",
                                    "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert f"wrote {out / 'results.json'}" in res.output and (out / "bench.png").stat().st_size > 0
    data = json.loads((out / "results.json").read_text())
    assert data["options"]["quick"] is True and data["options"]["workloads"] == ["short"]
    assert data["model"] and data["parity_passed"] is True
    modes = {m["mode"]: m for m in data["modes"]}
    measured = ("eager", "torchscript_fp32", "st_encode", "triton_grpc", "triton_http", "triton_grpc_ragged")
    for mode in measured:
        assert modes[mode]["status"] == "measured", modes[mode]
        assert "failed" not in modes[mode]["detail"], modes[mode]
    for mode in ("torchscript_bf16", "pt2_fp32", "onnxruntime_fp32", "infinity_emb"):
        assert modes[mode]["status"].startswith("not measured: --no-"), modes[mode]
    assert modes["triton_grpc_ragged"]["detail"].startswith("i32_ragged, the ragged export of the same source")
    cells = data["results"]
    assert {c["mode"] for c in cells} == set(measured)
    for cell in cells:
        assert cell["error"] is None, cell
        assert cell["workload"] == "short" and cell["calls"] > 0 and cell["seq_per_s"] > 0, cell
        assert cell["parity"]["passed"] and cell["parity"]["max_abs_diff"] <= 1e-5, cell
    served = {(c["mode"], c["concurrency"]) for c in cells if c["mode"].startswith("triton")}
    assert served == {(m, c) for m in measured[3:] for c in data["options"]["concurrencies"]}


def test_bench_takes_no_sibling_export_that_pools_otherwise(options_repo, tiny_models, tmp_path):
    """A ragged export of the same source with --pooling cls is not the mean-pooled export's ragged sibling (bench
    would compare its rows with the mean-pooled reference and fail parity); one that pools alike is."""
    from exporter.bench.in_process import sibling_export
    from exporter.checks.verify import exported_models

    repo = tmp_path / "repo"
    shutil.copytree(options_repo / "plain", repo / "plain")
    res = CliRunner().invoke(main, ["trace", tiny_models["bert"], "--out", str(repo), "--name", "ragged_cls",
                                    "--batching", "ragged", "--pooling", "cls", "--max-batch-size", "8"])
    assert res.exit_code == 0, res.output
    plain = exported_models(repo, ["plain"])[0].metadata
    assert sibling_export(repo, plain, "float32", "ragged") is None
    shutil.copytree(options_repo / "i32_ragged", repo / "i32_ragged")
    assert sibling_export(repo, plain, "float32", "ragged").name == "i32_ragged"


# ------------------------------------------------------------------------------------------------ tune
def test_tune_sweeps_a_ragged_int32_export_and_writes_the_best(options_repo, nvidia_backend, reference, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(options_repo / "i32_ragged", repo / "i32_ragged")
    config = repo / "i32_ragged" / "config.pbtxt"
    before = config.read_text()
    res = CliRunner().invoke(main, ["tune", str(repo), "--model", "i32_ragged", "--intra", "1", "--instances", "1,2",
                                    "--queue-delay-us", "700", "--max-trials", "2", "--max-seconds", "0.5",
                                    "--max-calls", "40", "--concurrency", "4", "--backend", "nvidia", "--write",
                                    "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    trials = [r["trial"] for r in report["results"]]
    assert [(t["intra_op_threads"], t["instances"], t["max_queue_delay_us"]) for t in trials] == [(1, 1, 700),
                                                                                                  (1, 2, 700)]
    for r in report["results"]:
        assert r["error"] is None and r["parity_passed"] and r["requests"] > 0 and r["seq_per_s"] > 0, r
    assert "libtriton_pytorch.so" in report["server"]
    best = report["best"]["trial"]
    assert report["written"] == str(config)
    assert Path(report["backup"]).read_text() == before
    # what a fresh server reads from the written config, and what it answers
    with TritonServer(repo, backend="nvidia", log_path=tmp_path / "triton.log") as server:
        with urllib.request.urlopen(f"http://{server.http_url}/v2/models/i32_ragged/config", timeout=30) as answer:
            raw = json.loads(answer.read())  # the config as the server read it
        with TritonClient(server.http_url, "http") as client:
            st, rows = reference
            got = [client.infer("i32_ragged", {"input_ids": np.asarray([st.tokenizer(t)["input_ids"]], np.int32)},
                                ["embedding"])["embedding"] for t in TEXTS]
    assert [g["count"] for g in raw["instance_group"]] == [best["instances"]]
    assert raw["dynamic_batching"]["max_queue_delay_microseconds"] == 700
    assert raw["parameters"]["INTRA_OP_THREAD_COUNT"]["string_value"] == "1"
    assert "INTER_OP_THREAD_COUNT" not in raw["parameters"]
    assert raw["input"][0]["data_type"] == "TYPE_INT32" and "batch_input" in raw  # still a ragged int32 model
    _close(np.concatenate(got), rows)
    parse_pbtxt(config.read_text())


# ------------------------------------------------------------------------------------------------ serve
def _start_serve(args: list[str], tmp_path: Path) -> tuple[subprocess.Popen, Path, Path]:
    stdout, stderr = tmp_path / "serve.out", tmp_path / "serve.err"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    with open(stdout, "w") as out, open(stderr, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "exporter.cli", "serve", *args], stdout=out, stderr=err,
                                cwd=tmp_path, env=env, start_new_session=True)
    return proc, stdout, stderr


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:  # serve's own process group, which this test started
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def one_model_repo(options_repo, tmp_path_factory):
    repo = tmp_path_factory.mktemp("serve_repo")
    shutil.copytree(options_repo / "plain", repo / "plain")
    return repo


def test_serve_on_the_ports_backend_server_and_log_given(one_model_repo, binary, nvidia_backend, reference, tmp_path):
    http_port, grpc_port = free_port(), free_port()
    log = tmp_path / "server.log"
    proc, stdout, stderr = _start_serve([str(one_model_repo), "--tritonserver", str(binary.path), "--host",
                                         "127.0.0.1", "--http-port", str(http_port), "--grpc-port", str(grpc_port),
                                         "--log", str(log), "--backend", "nvidia"], tmp_path)
    try:
        deadline = time.monotonic() + 180
        while "Ctrl-C stops the server." not in stdout.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, stderr.read_text()
            time.sleep(0.2)
        text = stdout.read_text()
        assert f"HTTP:    http://127.0.0.1:{http_port}" in text and f"gRPC:    127.0.0.1:{grpc_port}" in text
        assert f"log:     {log}" in text and "models:  plain (all READY)" in text
        assert f"server:  tritonserver {binary.version} (explicit: {binary.path})" in text
        assert "libtriton_pytorch.so" in text.split("backend:", 1)[1]
        st, rows = reference
        enc = st.tokenizer(TEXTS, padding=True, return_tensors="np")
        batch = {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
        for protocol, url in (("http", f"127.0.0.1:{http_port}"), ("grpc", f"127.0.0.1:{grpc_port}")):
            with TritonClient(url, protocol) as client:
                _close(client.infer("plain", batch, ["embedding"])["embedding"], rows)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=90)
    finally:
        _stop(proc)
    assert code == 0 and "stopping tritonserver" in stderr.read_text()
    assert "Started HTTPService at 127.0.0.1:" in log.read_text()


@pytest.fixture()
def taken_port():
    """A port held by another HTTP server (it answers 501 to Triton's health check)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

    holder = ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=holder.serve_forever, daemon=True)
    thread.start()
    yield holder.server_address[1]
    holder.shutdown()
    holder.server_close()


def test_serve_on_a_taken_port_says_so(one_model_repo, binary, taken_port, tmp_path):
    proc, _, stderr = _start_serve([str(one_model_repo), "--http-port", str(taken_port)], tmp_path)
    try:
        code = proc.wait(timeout=240)
    finally:
        _stop(proc)
    text = stderr.read_text()
    assert code == 1 and f"could not bind its ports on 127.0.0.1 (HTTP {taken_port}" in text, text
    assert f"Socket '127.0.0.1:{taken_port}' already in use" in text and "Fix: choose other ports" in text


def test_a_given_port_that_is_taken_is_not_tried_again(one_model_repo, binary, taken_port, monkeypatch):
    """Retrying helps only a port chosen here (lost to a race); a given one stays taken: one launch, not three."""
    from exporter.errors import ServerError

    launches = []
    launch = TritonServer._launch
    monkeypatch.setattr(TritonServer, "_launch",
                        lambda self, *args: (launches.append(self.http_port), launch(self, *args))[1])
    with pytest.raises(ServerError, match="could not bind its ports"):
        TritonServer(one_model_repo, binary=binary, http_port=taken_port).start()
    assert len(launches) == 1


# ------------------------------------------------------------------------------------------------ soak
def test_soak_a_ragged_int32_export_with_two_instances(options_repo, nvidia_backend, tmp_path):
    """soak of a ragged --int32 export whose config a user set to two instances: every answer checked."""
    repo = tmp_path / "repo"
    shutil.copytree(options_repo / "i32_ragged", repo / "i32_ragged")
    config = repo / "i32_ragged" / "config.pbtxt"
    text = config.read_text()
    assert text.count("count: 1") == 1
    config.write_text(text.replace("count: 1", "count: 2"))
    res = CliRunner().invoke(main, ["soak", str(repo), "--model", "i32_ragged", "--requests", "120", "--concurrency",
                                    "8", "--corpus-size", "8", "--backend", "nvidia", "--json", "--out",
                                    str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["passed"] and report["failures"] == [] and report["served_by"].startswith("NVIDIA C++")
    assert report["sent"] == report["ok"] == report["inferences"] == 120 and report["failed"] == 0
    assert {p["protocol"] for p in report["protocols"]} == {"http", "grpc"}
    for p in report["protocols"]:
        assert p["checked"] == p["ok"] == p["sent"] and p["parity_failures"] == 0 and p["max_abs_diff"] <= 1e-5
    assert json.loads((tmp_path / "out" / "nvidia.json").read_text())["sent"] == 120
