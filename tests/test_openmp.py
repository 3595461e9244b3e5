"""The OpenMP wait settings every tritonserver tei-export starts runs with (exporter/triton/openmp.py): on by
default, the user's own OMP_WAIT_POLICY / GOMP_SPINCOUNT kept, off when asked. Checked in the real server process's
environment; what they buy is measured by benchmarks/latency (a timed test would fail on a busy machine)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

import _triton_fixtures as fx
from exporter.cli import main
from exporter.errors import ServerError
from exporter.triton.openmp import OMP_SPIN_ENV, SPIN_SETTINGS, choose_openmp_wait
from exporter.triton.server import TritonServer
from exporter.triton_client import TritonClient
from exporter.tune import TuneOptions, thread_splits


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_choice():
    assert choose_openmp_wait(env={}).settings == SPIN_SETTINGS
    assert choose_openmp_wait(env={OMP_SPIN_ENV: "0"}).settings == ()
    assert choose_openmp_wait(True, env={OMP_SPIN_ENV: "0"}).settings == SPIN_SETTINGS  # the flag wins
    mine = choose_openmp_wait(env={"GOMP_SPINCOUNT": "1000"})
    assert mine.settings == () and "yours: GOMP_SPINCOUNT=1000" in mine.describe()
    with pytest.raises(ServerError, match="neither on nor off"):
        choose_openmp_wait(env={OMP_SPIN_ENV: "maybe"})
    env = choose_openmp_wait(env={}).environment({"PATH": "/bin"})
    assert env == {"PATH": "/bin", **dict(SPIN_SETTINGS)}


def test_server_runs_with_the_settings(binary, nvidia_backend, tmp_path):
    repo = tmp_path / "repo"
    fx.write_tiny_models(repo)
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", OMP_SPIN_ENV)}
    cases = ((None, base, dict(SPIN_SETTINGS)), (False, base, {}),
             (None, {**base, "OMP_WAIT_POLICY": "PASSIVE"}, {"OMP_WAIT_POLICY": "PASSIVE"}))
    for spin, env, expected in cases:
        with TritonServer(repo, binary=binary, backend="nvidia", omp_spin=spin, env=env,
                          log_path=tmp_path / "server.log") as server:
            with TritonClient(server.http_url, "http") as client:
                a, b = np.array([[1.0, 2.0, 3.0]], np.float32), np.array([[0.5, 0.5, 0.5]], np.float32)
                out = client.infer("pair", {"A__0": a, "B__1": b}, ["DIFF__0", "DOUBLE__1"])
            assert out["DIFF__0"].tolist() == (a - b).tolist()
            seen = {k: v for k, v in _environ(server.pid).items() if k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
            assert seen == expected
            assert f"tei-export: openmp: {server.openmp.describe()}" in server.log_text()


def test_manifests_carry_the_settings(tmp_path):
    repo = tmp_path / "repo"
    fx.write_tiny_models(repo)
    for kind in ("deployment", "kserve"):
        out = tmp_path / f"{kind}.yaml"
        res = CliRunner().invoke(main, ["manifest", str(repo), "--kind", kind, "--storage-uri", "s3://bucket/models",
                                        "--out", str(out)])
        assert res.exit_code == 0, res.output
        docs = list(yaml.safe_load_all(out.read_text()))
        containers = [c for d in docs if d.get("kind") == "Deployment"
                      for c in d["spec"]["template"]["spec"]["containers"]]
        containers += [d["spec"]["predictor"]["model"] for d in docs if d.get("kind") == "InferenceService"]
        assert containers
        for c in containers:
            env = {e["name"]: e.get("value") for e in c["env"]}
            assert all(env[k] == v for k, v in SPIN_SETTINGS), env


def test_tune_grid_splits_the_cores(tmp_path):
    assert thread_splits(2) == [(2, 1), (1, 2)]
    assert thread_splits(8) == [(8, 1), (4, 2), (2, 4), (1, 8)]
    options = TuneOptions(tmp_path, "m", max_queue_delay_us=(0,))
    assert [(t.intra_op_threads, t.instances) for t in options.trials(cores=4)] == [(4, 1), (2, 2), (1, 4)]
    only_intra = TuneOptions(tmp_path, "m", intra_op_threads=(1,), max_queue_delay_us=(0,))
    assert [(t.intra_op_threads, t.instances) for t in only_intra.trials(cores=4)] == [(1, 4)]
    both = TuneOptions(tmp_path, "m", intra_op_threads=(1, 2), instances=(1,), max_queue_delay_us=(0,))
    assert [(t.intra_op_threads, t.instances) for t in both.trials(cores=4)] == [(1, 1), (2, 1)]
