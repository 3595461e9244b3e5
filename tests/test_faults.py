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
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import _triton_fixtures as fx
from conftest import require_module
from exporter.errors import ServerError
from exporter.export.pipeline import ExportOptions, export_model
from exporter.triton.process import processes
from exporter.triton.stubs import stub_processes
from exporter.triton.server import TritonServer
from exporter.triton.server_log import error_summary
from exporter.checks.verify import verify_repository

httpclient = require_module("tritonclient.http", part="tritonclient")
grpcclient = require_module("tritonclient.grpc", part="tritonclient")
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
    export_model(minilm, ExportOptions(out=repo, name="mini", max_batch_size=16, with_tokenizer=True,
                                       tokenizer="python"))
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


def _end(proc: subprocess.Popen, server: int | None) -> None:
    """After a test of a command that runs a server, also a failed one: the command killed if it still runs, and
    the server's process group stopped (SIGTERM, so the server removes its stubs' shared memory; then SIGKILL)."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    if server is None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if fx.group_members(server):
            os.killpg(server, sig)
            deadline = time.monotonic() + 20
            while fx.group_members(server) and time.monotonic() < deadline:
                time.sleep(0.2)


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
    """None of ``pids`` runs (zombies count as gone: they run nothing)."""
    return not set(pids) & {p.pid for p in processes()}


def _shm_left(regions: list[str]) -> list[str]:
    return [r for r in regions if Path("/dev/shm", r).exists()]


# ---------------------------------------------------------------------------------------------------------------
# 1. the server killed (SIGKILL) in the middle of verify
# ---------------------------------------------------------------------------------------------------------------
def test_verify_names_a_killed_server(backend, token_repo, tmp_path):
    proc, _, stderr = _cli(["verify", str(token_repo), "--backend", backend, "--no-libtorch-check"], tmp_path)
    server = None
    try:
        server = _wait_for(lambda: fx.server_child(proc.pid), 240, "tritonserver child", proc, stderr)
        port = fx.option_of(server, "--http-port")
        # the count starts above 0 (the warm-up requests count): wait until verify's own requests add to it
        warm = _wait_for(lambda: _inferences(port, "minilm"), 240, "answer from the server", proc, stderr)
        _wait_for(lambda: _inferences(port, "minilm") > warm, 240, "request from verify", proc, stderr)
        regions = [stub.shm_region for stub in stub_processes(server)]
        group = fx.group_members(server)
        os.kill(server, signal.SIGKILL)
        killed = time.monotonic()
        code = proc.wait(timeout=120)
        seconds = time.monotonic() - killed
    finally:
        _end(proc, server)
    text = stderr.read_text()
    _say(f"server SIGKILLed mid-verify ({backend})", f"exit {code} {seconds:.1f} s after the kill; {text.strip()}")
    assert code != 0
    assert re.search(rf"error: tritonserver \(pid {server}\) was killed by SIGKILL while verify sent minilm "
                     r"requests over (http|grpc)", text), text
    assert "out-of-memory killer" in text and "Traceback" not in text
    log = re.search(r"read the server log at (\S+?);", text)
    assert log and Path(log.group(1)).read_text().startswith("$ "), text  # the log it names exists
    assert len(group) >= (1 if backend == "nvidia" else 2)  # the compatibility backend's stubs were in the group
    assert fx.group_members(server) == [], "the server's process group outlived verify"
    assert _shm_left(regions) == [], "the stubs' shared-memory regions outlived verify"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_verify_takes_its_server_along(sig, text_repo, tmp_path):
    """The other way round: verify itself stopped by `timeout` (SIGTERM) or SIGKILLed runs no clean-up; its server,
    in a session of its own, gets SIGTERM from the kernel when verify ends, and stops with its stubs."""
    proc, _, stderr = _cli(["verify", str(text_repo), "--no-libtorch-check"], tmp_path)
    server = None
    try:
        server = _wait_for(lambda: fx.server_child(proc.pid), 240, "tritonserver child", proc, stderr)
        port = fx.option_of(server, "--http-port")
        _wait_for(lambda: _inferences(port, "mini"), 240, "answer from the server", proc, stderr)
        stubs = fx.children(server)
        proc.send_signal(sig)
        proc.wait(timeout=60)
        sent = time.monotonic()
        gone = _wait_for(lambda: not fx.group_members(server) and _gone(stubs), 60, "end of the server's group")
        seconds = time.monotonic() - sent
    finally:
        _end(proc, server)
    _say(f"verify killed by {sig.name}", f"its server's group gone {seconds:.1f} s later")
    assert gone and stubs


def test_killed_server_is_reported_by_the_shared_check(backend, text_repo, tmp_path):
    """What verify and bench call after a failed request: the server's exit, its log, and a stop that kills the
    orphaned stubs at once."""
    server = TritonServer(text_repo, backend=backend, log_path=tmp_path / "triton.log").start()
    try:
        stubs = stub_processes(server.pid)
        assert stubs, "the tokenizer model runs in a stub on both backends"
        os.kill(server.pid, signal.SIGKILL)
        with pytest.raises(ServerError) as err:
            server.check_running("while bench measured grpc (short)", grace=10)
        # orphans now, still found by the server's process group (so a server killed during start-up is cleaned too)
        assert {s.pid for s in stub_processes(server.pgid)} == {s.pid for s in stubs}
    finally:
        started = time.monotonic()
        server.stop()
        seconds = time.monotonic() - started
    text = str(err.value)
    _say(f"shared check after SIGKILL ({backend})", f"{text}; stop() took {seconds:.1f} s")
    assert f"tritonserver (pid {server.pgid}) was killed by SIGKILL while bench measured grpc (short)" in text
    assert str(tmp_path / "triton.log") in text
    assert fx.group_members(server.pgid) == [] and _gone([s.pid for s in stubs])
    assert seconds < 5, "a dead server's stubs are killed at once, not after the linger"
    assert _shm_left([s.shm_region for s in stubs]) == []
    with pytest.raises(ServerError, match="killed by SIGKILL"):  # remembered after stop()
        server.check_running("later")


# ---------------------------------------------------------------------------------------------------------------
# 2. a Python backend stub killed
# ---------------------------------------------------------------------------------------------------------------
def _stub_target(backend: str) -> str:
    """The model whose stub is killed: NVIDIA's backend runs the token model in the server, so only the tokenizer
    has a stub; the compatibility backend runs the token model in one."""
    return "mini_tokenizer" if backend == "nvidia" else "mini"


def _text_request(url: str, texts: list[str]) -> np.ndarray:
    client = httpclient.InferenceServerClient(url, connection_timeout=30, network_timeout=30)
    try:
        item = httpclient.InferInput("text", [len(texts), 1], "BYTES")
        item.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=np.object_).reshape(-1, 1))
        return client.infer("mini_text", [item]).as_numpy("embedding")
    finally:
        client.close()


def _token_request(url: str, enc: dict, model: str = "mini", timeout: float = 30, protocol: str = "http"):
    module = httpclient if protocol == "http" else grpcclient
    client = (httpclient.InferenceServerClient(url, connection_timeout=timeout, network_timeout=timeout)
              if protocol == "http" else grpcclient.InferenceServerClient(url))
    try:
        inputs = []
        for name, array in enc.items():
            item = module.InferInput(name, list(array.shape), "INT64")
            item.set_data_from_numpy(array)
            inputs.append(item)
        extra = {"client_timeout": timeout} if protocol == "grpc" else {}
        return client.infer(model, inputs, **extra).as_numpy("embedding")
    finally:
        client.close()


def test_killed_stub_is_not_restarted(backend, text_repo, st_model, tmp_path):
    """Triton 2.51 does not restart a killed stub: every request to its model fails after a second's health check,
    and the model still reports READY."""
    target = _stub_target(backend)
    server = TritonServer(text_repo, backend=backend, log_path=tmp_path / "triton.log").start()
    try:
        with pytest.raises(InferenceServerException) as err:  # an empty text batch: Triton refuses it itself
            _text_request(server.http_url, [])
        empty = str(err.value)
        stub = next(s for s in stub_processes(server.pid) if s.model == target)
        os.kill(stub.pid, signal.SIGKILL)
        errors = []
        for _ in range(2):
            with pytest.raises(InferenceServerException) as err:
                _text_request(server.http_url, ["a sentence"])
            errors.append(str(err.value))
            time.sleep(2)
        client = httpclient.InferenceServerClient(server.http_url)
        ready = client.is_model_ready(target) and client.is_server_ready()
        client.close()
        lost = server.lost_stubs()
        good = None
        if backend == "nvidia":  # the token model runs in NVIDIA's backend, not in the dead stub
            good = _token_request(server.http_url, fx.tokenize(st_model, fx.SENTENCES))
    finally:
        server.stop()
    _say(f"stub of {target} killed ({backend})", f"requests: {errors}; still READY: {ready}")
    _say(f"empty text batch ({backend})", empty)
    assert "expected 1 string elements for inference input 'text' for model 'mini_text', got 0" in empty
    for text in errors:
        assert f"in ensemble 'mini_text', Stub process '{stub.instance}' is not healthy" in text
    assert ready, "Triton 2.51 still reports the model and the server READY (measured; the README says so)"
    assert [s.instance for s in lost] == [stub.instance]
    assert "is gone" in server.describe_lost_stub(lost[0]) and f"pid {stub.pid}" in server.describe_lost_stub(lost[0])
    if good is not None:
        assert np.abs(good - st_model.encode(fx.SENTENCES, convert_to_numpy=True)).max() <= 1e-5
    assert _shm_left([stub.shm_region]) == [], "the killed stub's shared-memory region is removed at stop"


def test_verify_names_the_model_whose_stub_died(backend, text_repo):
    target = _stub_target(backend)
    victim = {}
    before = set(fx.children(os.getpid()))

    def kill_when(message: str) -> None:  # verify's own progress: the check that uses the stub is starting
        if victim or not message.startswith(f"{target}: " if target == "mini" else "mini_text: "):
            return
        server = next(p for p in fx.children(os.getpid()) if p not in before and os.getpgid(p) == p)
        stub = next(s for s in stub_processes(server) if s.model == target)
        os.kill(stub.pid, signal.SIGKILL)
        victim.update(pid=stub.pid, instance=stub.instance)

    started = time.monotonic()
    report = verify_repository(text_repo, protocols=("http",), corpus_size=8, libtorch=False,
                               server_options={"backend": backend}, progress=kill_when)
    seconds = time.monotonic() - started
    failed = {c.model: c.error for c in report.checks if not c.passed}
    _say(f"verify with the stub of {target} killed ({backend})", f"{seconds:.0f} s; {failed}")
    assert victim and not report.passed
    gone = f"its Python backend stub process (instance {victim['instance']}, pid {victim['pid']}) is gone"
    if backend == "nvidia":
        assert set(failed) == {"mini_text"}, failed  # the token model, served by NVIDIA's backend, passed
        assert failed["mini_text"].startswith(f"model 'mini_tokenizer' (a step of ensemble 'mini_text') failed: "
                                              f"{gone}"), failed
    else:
        assert set(failed) == {"mini", "mini_text"}, failed
        assert failed["mini"].startswith(f"model 'mini' failed: {gone}"), failed
        assert failed["mini_text"].startswith("model 'mini' (a step of ensemble 'mini_text') failed"), failed
    assert "restart the server" in report.table()


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
    server = None
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
        _end(proc, server)
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


# ---------------------------------------------------------------------------------------------------------------
# 5.-7. bad input at run time, on both backends
# ---------------------------------------------------------------------------------------------------------------
def test_broken_model_file_is_named(backend, binary, minilm_export, tmp_path):
    import torch

    repo = tmp_path / "broken"
    source = minilm_export.target.model_dir
    for name in ("truncated", "empty", "other"):
        fx.copy_model(source, repo, name)
    data = (repo / "truncated" / "1" / "model.pt").read_bytes()
    (repo / "truncated" / "1" / "model.pt").write_bytes(data[:len(data) // 2])
    (repo / "empty" / "1" / "model.pt").write_bytes(b"")
    torch.jit.script(fx.Double()).save(str(repo / "other" / "1" / "model.pt"))  # forward(x): another model's file
    _, text = fx.start_must_fail(repo, binary, backend=backend, startup_timeout=180, log_path=tmp_path / "triton.log")
    _say(f"broken model.pt ({backend})", text)
    expected = {
        "truncated": "PytorchStreamReader failed reading zip archive: failed finding central directory",
        "empty": "istream reader failed: getting the current position",
        "other": "unable to load model 'other', configuration expects 3 inputs, model provides 1",
    }
    for name, words in expected.items():
        path = repo / name / "1" / "model.pt"
        assert re.search(rf"'{name}' version 1: [^;]*{re.escape(words)}[^;]*\(model file {re.escape(str(path))}, "
                         rf"{path.stat().st_size} bytes\)", text), (name, text)
    assert "frame #" not in text and "Exception raised from" not in text  # torch's C++ stack is left in the log


@pytest.fixture(scope="class")
def servers(token_repo, binary, request, tmp_path_factory):
    request.getfixturevalue("nvidia_backend")
    logs = tmp_path_factory.mktemp("bad_request_logs")
    started = {}
    try:
        for name in BACKENDS:
            started[name] = TritonServer(token_repo, binary=binary, backend=name, log_path=logs / f"{name}.log").start()
        yield started
    finally:
        for server in started.values():
            server.stop()


class TestBadRequests:
    """Requests the model cannot compute: an error for that request, and the next good one answered correctly."""

    @staticmethod
    def _both(servers, enc, protocol="http", timeout=30.0):
        out = {}
        for name, server in servers.items():
            url = server.http_url if protocol == "http" else server.grpc_url
            started = time.monotonic()
            try:
                got = _token_request(url, enc, "minilm", timeout, protocol)
                out[name] = ("answer", f"{got.dtype} {list(got.shape)}", time.monotonic() - started)
            except Exception as err:
                out[name] = (type(err).__name__, str(err), time.monotonic() - started)
        return out

    @staticmethod
    def _still_good(servers, st_model):
        enc = fx.tokenize(st_model, fx.SENTENCES)
        ref = st_model.encode(fx.SENTENCES, convert_to_numpy=True)
        for name, server in servers.items():
            assert server.running, name
            got = _token_request(server.http_url, enc, "minilm")
            assert np.abs(got - ref).max() <= 1e-5, name

    def test_ids_beyond_the_vocabulary(self, servers, st_model):
        enc = fx.tokenize(st_model, fx.SENTENCES[:1])
        enc["input_ids"][0, 1] = 999_999  # the vocabulary has 30522 ids
        for protocol in ("http", "grpc"):
            got = self._both(servers, enc, protocol)
            _say(f"token id 999999 over {protocol}", {k: (v[0], v[1].splitlines()[0], v[1].splitlines()[-1])
                                                      for k, v in got.items()})
            assert got["nvidia"][1] == got["compat"][1], "the compatibility backend says what NVIDIA's says"
            assert got["nvidia"][0] == "InferenceServerException"
            lines = got["nvidia"][1].splitlines()
            assert "PyTorch execute failure: The following operation failed in the TorchScript interpreter" in lines[0]
            assert lines[-1] == "RuntimeError: index out of range in self"
            assert error_summary(got["nvidia"][1]) == f"{lines[0]} ... {lines[-1]}"  # what verify reports
        self._still_good(servers, st_model)

    def test_more_tokens_than_positions(self, servers, st_model):
        length = 600  # MiniLM has 512 positions; the config accepts any length (dims [-1])
        enc = {"input_ids": np.full((1, length), 1000, np.int64), "attention_mask": np.ones((1, length), np.int64),
               "token_type_ids": np.zeros((1, length), np.int64)}
        for protocol in ("http", "grpc"):
            got = self._both(servers, enc, protocol)
            _say(f"{length} tokens over {protocol}", {k: (v[0], v[1].splitlines()[-1]) for k, v in got.items()})
            assert got["nvidia"][1] == got["compat"][1]
            assert got["nvidia"][1].splitlines()[-1] == ("RuntimeError: The size of tensor a (600) must match the size "
                                                         "of tensor b (512) at non-singleton dimension 1")
        self._still_good(servers, st_model)

    def test_empty_batch_of_nonempty_rows_is_refused_by_triton(self, servers, st_model):
        enc = {k: np.zeros((0, 8), np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
        for protocol in ("http", "grpc"):
            got = self._both(servers, enc, protocol)
            _say(f"batch [0, 8] over {protocol}", got)
            for name, (kind, text, _) in got.items():
                assert kind == "InferenceServerException", (name, text)
                assert re.search(r"input byte size mismatch for input '\w+' for model 'minilm'. Expected 64, got 0",
                                 text), (name, text)
        self._still_good(servers, st_model)

    def test_empty_batch_of_empty_rows_gets_no_answer(self, servers, st_model):
        """A [0, 0] request passes Triton's checks and reaches the backend, which returns without answering when the
        batch holds no rows: NVIDIA's libtorch.cc and the Python backend under the compatibility backend alike. The
        client waits until its own timeout; the request is never released (the README says so)."""
        enc = {k: np.zeros((0, 0), np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
        for protocol in ("http", "grpc"):
            got = self._both(servers, enc, protocol, timeout=4.0)
            _say(f"batch [0, 0] over {protocol}, client timeout 4 s", got)
            for name, (kind, text, seconds) in got.items():
                assert kind != "answer", (name, text)
                assert "timed out" in text or "Deadline Exceeded" in text, (name, text)
                assert 3.5 <= seconds < 10, (name, seconds)
        self._still_good(servers, st_model)
