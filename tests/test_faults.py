"""Faults and bad input at run time (issue 12), each with real processes: a tritonserver killed under `verify`, a
Python backend stub killed, `serve` stopped by a signal it inherited as ignored, two exports racing into one
repository, a broken model file, and requests a model cannot compute (ids beyond the vocabulary, too many tokens, an
empty batch). Where a case runs on a server it runs on NVIDIA's LibTorch backend and on the compatibility backend.

Each test prints what it measured (``pytest -s`` shows it): the outcomes the README's "What is not safe" states.
"""
from __future__ import annotations

import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import _triton_fixtures as fx
from exporter.errors import ServerError
from exporter.export import ExportOptions, export_model
from exporter.triton.server import TritonServer
from exporter.verify import verify_repository

httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ("nvidia", "compat")


def _say(case: str, outcome: str) -> None:
    print(f"\nMEASURED {case}: {outcome}")


@pytest.fixture(params=BACKENDS)
def backend(request):
    if request.param == "nvidia":
        request.getfixturevalue("nvidia_backend")  # skips, saying why, where it is not built
    return request.param


@pytest.fixture(scope="module")
def token_repo(tmp_path_factory, minilm_export):
    repo = tmp_path_factory.mktemp("faults_tokens")
    fx.copy_model(minilm_export.target.model_dir, repo, "minilm")
    return repo


@pytest.fixture(scope="module")
def text_repo(tmp_path_factory, minilm):
    """MiniLM with the text pipeline: the tokenizer model runs in a Python backend stub on either backend."""
    repo = tmp_path_factory.mktemp("faults_text")
    export_model(minilm, ExportOptions(out=repo, name="mini", max_batch_size=16, with_tokenizer=True))
    return repo


def _env() -> dict:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _cli(args: list[str], out: Path, **popen) -> tuple[subprocess.Popen, Path, Path]:
    """``tei-export ARGS`` as a process of its own, stdout and stderr to files under ``out``."""
    stdout, stderr = out / "stdout.txt", out / "stderr.txt"
    proc = subprocess.Popen([sys.executable, "-m", "exporter.cli", *args], env=_env(), cwd=out,
                            stdin=subprocess.DEVNULL, stdout=stdout.open("w"), stderr=stderr.open("w"), **popen)
    return proc, stdout, stderr


def _wait_for(condition, timeout: float, what: str, proc: subprocess.Popen | None = None, output: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            text = output.read_text() if output else ""
            pytest.fail(f"the command ended (exit {proc.returncode}) before {what}:\n{text}")
        time.sleep(0.2)
    pytest.fail(f"no {what} within {timeout} s")


def _inferences(port: str, model: str) -> int:
    try:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{port}", connection_timeout=2, network_timeout=2)
        try:
            stats = client.get_inference_statistics(model)
        finally:
            client.close()
        return sum(int(s.get("inference_count", 0)) for s in stats.get("model_stats", []))
    except Exception:  # not answering yet
        return 0


def _gone(pids: list[int]) -> bool:
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(pid)
    return not alive


def _shm_left(regions: list[str]) -> list[str]:
    return [r for r in regions if Path("/dev/shm", r).exists()]


# ---------------------------------------------------------------------------------------------------------------
# 3. serve in the background (SIGINT inherited as ignored) stops on SIGINT and on SIGTERM
# ---------------------------------------------------------------------------------------------------------------
def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # what bash does to a script's background jobs


def test_sigint_is_inherited_as_ignored():
    """The premise: a process started this way has SIGINT ignored (Python then installs no KeyboardInterrupt)."""
    probe = subprocess.run([sys.executable, "-c", "import signal, sys; "
                            "sys.exit(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)"],
                           preexec_fn=_ignore_sigint, timeout=60)
    assert probe.returncode == 1


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serve_in_background_stops_on(sig, text_repo, tmp_path):
    proc, stdout, stderr = _cli(["serve", str(text_repo), "--log", str(tmp_path / "triton.log")], tmp_path,
                                preexec_fn=_ignore_sigint)
    try:
        _wait_for(lambda: "Ctrl-C stops the server." in stdout.read_text(), 240, "READY line from serve", proc,
                  stderr)
        server = fx.server_child(proc.pid)
        stubs = fx.children(server)
        assert stubs, "the tokenizer model's stub runs under the server"
        proc.send_signal(sig)
        sent = time.monotonic()
        code = proc.wait(timeout=90)
        seconds = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = stderr.read_text()
    _say(f"serve with SIGINT ignored, sent {sig.name}", f"exit {code} after {seconds:.1f} s; {text.strip()!r}")
    assert code == 0 and f"stopping tritonserver on {sig.name}" in text and "Traceback" not in text
    assert fx.group_members(server) == [] and _gone(stubs)


# ---------------------------------------------------------------------------------------------------------------
# 4. two exports into one repository at once
# ---------------------------------------------------------------------------------------------------------------
def _source_of_config(path: Path) -> str:
    return re.search(r"^# Generated by tei-export \S+ from (\S+)\.", path.read_text(), re.M).group(1)


def test_two_traces_at_once_one_wins(tmp_path):
    from model_factory import random_model

    sources = []
    for name in ("source_a", "source_b"):
        sources.append(random_model(tmp_path / name, "bert", max_seq_length=32))
    repo = tmp_path / "repo"
    runs = []
    for k, source in enumerate(sources):
        out = tmp_path / f"run{k}"
        out.mkdir()
        runs.append(_cli(["trace", source, "--out", str(repo), "--name", "m", "--max-batch-size", "2"], out))
    codes = [proc.wait(timeout=600) for proc, _, _ in runs]
    errors = [err.read_text() for _, _, err in runs]
    _say("two traces at once", f"exit codes {codes}; loser said: {[e.strip() for e in errors if e.strip()]}")
    assert sorted(c == 0 for c in codes) == [False, True], (codes, errors)
    loser = errors[codes.index(next(c for c in codes if c != 0))]
    assert re.search(r"error: version 1 of model 'm' (already exists|was written by another export while this one "
                     r"ran)", loser), loser
    assert str(repo / "m" / "1") in loser and "--force" in loser and "--version 2" in loser
    assert "Traceback" not in loser and "OSError" not in loser
    assert sorted(p.name for p in repo.iterdir()) == ["m"]  # no staging folder, no lock file
    assert sorted(p.name for p in (repo / "m").iterdir()) == ["1", "config.pbtxt"]
    winner = sources[codes.index(0)]
    meta = (repo / "m" / "1" / "tei_export.json").read_text()
    assert _source_of_config(repo / "m" / "config.pbtxt") == Path(winner).name and f'"{winner}"' in meta


@pytest.mark.parametrize("force", [False, True], ids=["no-force", "force"])
def test_racing_commits_never_mix(force, tmp_path):
    """The commit itself, raced on purpose: processes stage a version, wait on one barrier, then commit together.
    Without --force one wins and the others fail naming the folder; with --force each replaces the last, whole."""
    context = multiprocessing.get_context("fork")  # the workers only rename folders; spawn would import torch
    for round_ in range(5):  # without the lock, 6 racers got a raw OSError in about one round of six
        repo = tmp_path / f"repo{round_}"
        repo.mkdir()
        barrier, results = context.Barrier(6), context.Queue()
        workers = [context.Process(target=fx.commit_when_released,
                                   args=(str(repo), "m", f"run{k}", force, barrier, results)) for k in range(6)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=120)
        outcomes = dict(results.get(timeout=10) for _ in workers)
        ok = [label for label, said in outcomes.items() if said == "ok"]
        if force:
            assert len(ok) == 6, outcomes
        else:
            assert len(ok) == 1, outcomes
            for label, said in outcomes.items():
                if label not in ok:
                    assert said.startswith("RepositoryError: version 1 of model 'm' was written by another export"), said
                    assert str(repo / "m" / "1") in said and "--version 2" in said, said
        label = (repo / "m" / "1" / "label.txt").read_text()
        assert (repo / "m" / "config.pbtxt").read_text() == f"# {label}\n", "config and version from different runs"
        assert sorted(p.name for p in repo.iterdir()) == ["m"]
    _say(f"racing commits, force={force}", f"last round: {outcomes}")
