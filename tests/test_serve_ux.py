"""What a new user meets when serving and verifying: Triton's usual ports (and a loud note when one is taken), the
metrics endpoint, an empty repository, a load failure's cause, and --url/--model as serve and the report print
them. Real tritonserver with NVIDIA's backend, on 127.0.0.1."""
from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from model_factory import random_model

from exporter.cli import main
from exporter.errors import ConfigError, ServerError
from exporter.triton.ports import choose_ports, port_free
from exporter.triton.process import free_port
from exporter.triton.server import TritonServer
from exporter.triton_client import TritonClient, parse_url


@pytest.fixture(scope="module")
def text_export(tmp_path_factory):
    """A small random BERT exported with its Python text models (token model `tiny`, `tiny_tokenizer`, the
    `tiny_text` ensemble, whose batch limit Triton checks against the token model's)."""
    from exporter.export.pipeline import ExportOptions, export_model

    source = random_model(tmp_path_factory.mktemp("src") / "bert", "bert", max_seq_length=32)
    repo = tmp_path_factory.mktemp("repo")
    export_model(source, ExportOptions(out=repo, name="tiny", max_batch_size=4, with_tokenizer=True,
                                       tokenizer="python"))
    return repo


def _three_free_ports() -> tuple[int, int, int]:
    ports: list[int] = []
    while len(ports) < 3:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return tuple(ports)


def _listening(port: int) -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


def test_choose_ports_takes_the_usual_ones_when_free_and_names_those_taken():
    usual = _three_free_ports()
    free = choose_ports("127.0.0.1", (None, None, None), metrics=True, preferred=usual)
    assert (free.http, free.grpc, free.metrics, free.taken) == (*usual, ())
    assert free.note("127.0.0.1") is None
    with _listening(usual[0]):
        assert not port_free("127.0.0.1", usual[0])
        busy = choose_ports("127.0.0.1", (None, None, None), metrics=False, preferred=usual)
    assert busy.http not in usual and busy.grpc == usual[1] and busy.metrics is None
    assert busy.taken == (f"HTTP {usual[0]}",)
    assert f"HTTP {usual[0]} is taken" in busy.note("127.0.0.1") and f"using HTTP {busy.http}" in busy.note("127.0.0.1")
    given = choose_ports("127.0.0.1", (usual[1], None, None), metrics=True, preferred=usual)
    assert given.http == usual[1] and given.grpc not in (usual[1],) and len({given.http, given.grpc,
                                                                              given.metrics}) == 3


def test_server_on_preferred_ports_with_metrics(binary, nvidia_backend, text_export, tmp_path):
    usual = _three_free_ports()
    with _listening(usual[0]):  # HTTP's usual port is held: the server must say so and use another
        server = TritonServer(text_export, binary=binary, backend="nvidia", metrics=True, preferred_ports=usual,
                              log_path=tmp_path / "triton.log")
        with server:
            assert server.http_port != usual[0] and (server.grpc_port, server.metrics_port) == usual[1:]
            assert server.port_note and f"HTTP {usual[0]}" in server.port_note
            with TritonClient(server.http_url, "http") as client:
                data = np.array([[b"metrics count this"]], dtype=np.object_)
                client.infer("tiny_text", {"text": data}, ["embedding"])
            with urllib.request.urlopen(server.metrics_url, timeout=10) as answer:
                text = answer.read().decode()
    counts = [line for line in text.splitlines() if line.startswith('nv_inference_count{model="tiny"')]
    assert counts and float(counts[0].rsplit(" ", 1)[1]) >= 1, text[:2000]


def test_serve_refuses_an_empty_repository(tmp_path):
    empty = tmp_path / "empty_repo"
    empty.mkdir()
    result = CliRunner().invoke(main, ["serve", str(empty)])
    assert result.exit_code != 0 and "holds no model folders" in result.output and str(empty) in result.output


def test_load_failure_names_its_cause(binary, nvidia_backend, text_export, tmp_path):
    """An ensemble that allows a larger batch than its token model: Triton refuses it before loading it (no state,
    no reason in the index); the error must carry the server's own words."""
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(text_export, repo)
    config = repo / "tiny" / "config.pbtxt"
    config.write_text(config.read_text().replace("max_batch_size: 4", "max_batch_size: 2"))
    server = TritonServer(repo, binary=binary, backend="nvidia", log_path=tmp_path / "triton.log")
    with pytest.raises(ServerError) as caught:
        server.start()
    server.stop()
    message = str(caught.value)
    assert "'tiny_text'" in message and "maximum batch size" in message and "state none" not in message, message


@pytest.mark.parametrize("url, address, protocol", [
    ("http://127.0.0.1:8000", "127.0.0.1:8000", "http"), ("http://127.0.0.1:8000/", "127.0.0.1:8000", "http"),
    ("127.0.0.1:8001", "127.0.0.1:8001", None), ("grpc://localhost:8001", "localhost:8001", "grpc"),
    ("[::1]:8000", "[::1]:8000", None)])
def test_url_forms(url, address, protocol):
    endpoint = parse_url(url)
    assert (endpoint.address, endpoint.protocol) == (address, protocol)


@pytest.mark.parametrize("url", ["http://127.0.0.1", "https://127.0.0.1:8000", "127.0.0.1:99999", "host:abc",
                                 "http://127.0.0.1:8000/v2/models", "", ":8000", "127.0.0.1:0"])
def test_bad_urls_are_one_line_errors(url, text_export):
    with pytest.raises(ConfigError):
        parse_url(url)
    result = CliRunner().invoke(main, ["verify", str(text_export), "--url", url, "--no-libtorch-check"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert [line for line in result.output.splitlines() if line.strip()] == [result.output.strip()]
    assert result.output.startswith("error: --url")


def test_verify_against_serve_addresses(binary, nvidia_backend, text_export, tmp_path):
    """verify --url with the address serve prints (http://...), --model NAME_text alone, an unknown name listed
    against the choices, and nothing listening: a one-line error."""
    with TritonServer(text_export, binary=binary, backend="nvidia", log_path=tmp_path / "triton.log") as server:
        result = CliRunner().invoke(main, ["verify", str(text_export), "--url", f"http://{server.http_url}",
                                           "--model", "tiny_text", "--no-libtorch-check", "--corpus-size", "8"])
        assert result.exit_code == 0, result.output
        rows = [line.split() for line in result.output.splitlines() if line.startswith("tiny")]
        assert rows and {r[0] for r in rows if r[1] in ("http", "grpc")} == {"tiny_text"}, result.output
        assert {r[1] for r in rows if r[0] == "tiny_text" and r[1] in ("http", "grpc")} == {"http"}
        wrong = CliRunner().invoke(main, ["verify", str(text_export), "--url", server.grpc_url,
                                          "--model", "tiny_tokenizer", "--no-libtorch-check"])
        assert wrong.exit_code != 0 and "choose from tiny, tiny_text" in wrong.output, wrong.output
    nobody = CliRunner().invoke(main, ["verify", str(text_export), "--url", f"http://127.0.0.1:{free_port()}",
                                       "--no-libtorch-check"])
    assert nobody.exit_code != 0 and "Traceback" not in nobody.output
    assert "no Triton answers at 127.0.0.1:" in nobody.output and "over http" in nobody.output
    assert len(nobody.output.strip().splitlines()) == 1, nobody.output


README_LINES = {"HTTP": "HTTP:    http://127.0.0.1:8000", "gRPC": "gRPC:    127.0.0.1:8001",
                "metrics": "metrics: http://127.0.0.1:8002/metrics"}


def test_readme_serve_example_matches_serve(nvidia_backend, text_export, tmp_path):
    """The README shows the lines `tei-export serve` prints on Triton's usual ports; serve run here prints each of
    them verbatim, except for a port that is taken on this machine, which its WARNING line names, and the address it
    prints instead answers."""
    import os
    import signal
    import subprocess
    import sys
    import time

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert "localhost:8000" not in readme
    for line in README_LINES.values():
        assert line in readme, line
    root = Path(__file__).resolve().parent.parent
    stdout, stderr = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    proc = subprocess.Popen([sys.executable, "-m", "exporter.cli", "serve", str(text_export), "--backend", "nvidia"],
                            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(root)}, stdin=subprocess.DEVNULL,
                            stdout=stdout.open("w"), stderr=stderr.open("w"), start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while "Ctrl-C stops the server." not in stdout.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, stderr.read_text()
            time.sleep(0.2)
        printed, warned = stdout.read_text(), stderr.read_text()
        for role, line in README_LINES.items():
            port = line.rsplit(":", 1)[1].split("/")[0]
            if f"{role} {port}" in warned:  # taken here: said loudly, and what it used instead answers
                assert "WARNING: Triton's usual port" in warned
            else:
                assert line in printed.splitlines(), (line, printed)
        url = next(l.split()[1] for l in printed.splitlines() if l.startswith("HTTP:"))
        with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=10) as answer:
            assert answer.status == 200
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
    assert proc.returncode == 0, stderr.read_text()


def test_backend_status_tells_one_truth(binary, nvidia_backend, tmp_path, monkeypatch):
    """Where a build comes from (the set-up's vendored sources when they are beside the checkout) and which cached
    builds this server and torch can use: the one serving is listed as usable, a build for another torch is not."""
    from dataclasses import replace

    from exporter.triton.backend_build import cached_builds
    from exporter.triton.status import backend_status, build_line, sources_line

    monkeypatch.delenv("TEI_EXPORT_BACKEND_SOURCE", raising=False)
    checkout = tmp_path / "project"
    checkout.mkdir()
    assert "clones from GitHub" in sources_line("r24.10", checkout) and "vendor" not in sources_line("r24.10",
                                                                                                        checkout)
    vendor = tmp_path / "shared" / "vendor" / "triton-r24.10"
    vendor.mkdir(parents=True)
    line = sources_line("r24.10", checkout)
    assert f"{vendor} for the set-up" in line and f"--source {vendor}" in line
    monkeypatch.setenv("TEI_EXPORT_BACKEND_SOURCE", str(vendor))
    assert sources_line("r24.10", checkout).startswith(f"{vendor} ($TEI_EXPORT_BACKEND_SOURCE)")

    status = backend_status(binary, "nvidia")
    serving = [line for line in status.builds if str(status.chosen.library.parent) in line]
    if status.chosen.library.parent.parent.name == "nvidia-pytorch-backend":  # a build of the cache serves
        assert len(serving) == 1 and serving[0].endswith("usable here"), status.builds
    build = next(iter(cached_builds()), None)
    if build is not None:
        other = replace(build, torch_version="0.0.1+other")
        assert "not usable here (built against torch 0.0.1+other" in build_line(other, binary)
