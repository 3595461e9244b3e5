"""The allocator every tritonserver tei-export starts runs with: jemalloc preloaded by default (the set-up installs
Debian's libjemalloc2), glibc's malloc when asked (--allocator system, $TEI_EXPORT_ALLOCATOR=system) or when
jemalloc is missing (with a warning). Checked in the real server process's memory map."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import _triton_fixtures as fx
from exporter.cli import main
from exporter.errors import ServerError
from exporter.triton.allocator import ALLOCATOR_ENV, JEMALLOC, choose_allocator, find_jemalloc
from exporter.triton.server import TritonServer
from exporter.triton_client import TritonClient


@pytest.fixture(scope="module")
def jemalloc() -> Path:
    from conftest import require

    found = find_jemalloc()
    require(found is not None, f"{JEMALLOC} is not installed (the set-up installs Debian's libjemalloc2)",
            part="build-tools")  # a Debian package the set-up installs with the build tools
    return found


def _mapped(pid: int) -> set[str]:
    return {line.split()[-1] for line in Path(f"/proc/{pid}/maps").read_text().splitlines() if "/" in line}


def test_choice(jemalloc, tmp_path):
    assert choose_allocator(env={}).library == jemalloc
    assert choose_allocator(env={ALLOCATOR_ENV: "system"}).library is None
    assert choose_allocator("jemalloc", env={ALLOCATOR_ENV: "system"}).library == jemalloc  # the flag wins
    with pytest.raises(ServerError, match="unknown allocator 'tcmalloc'"):
        choose_allocator(env={ALLOCATOR_ENV: "tcmalloc"})
    missing = choose_allocator(env={}, search=(tmp_path,))
    assert missing.library is None and missing.missing and "apt-get install libjemalloc2" in missing.describe()
    env = choose_allocator(env={}).environment({"LD_PRELOAD": "/opt/mine.so", "PATH": "/bin"})
    assert env["LD_PRELOAD"] == f"{jemalloc}:/opt/mine.so" and env["PATH"] == "/bin"
    assert choose_allocator("system").environment({"A": "1"}) == {"A": "1"}


def test_server_runs_with_the_allocator(binary, nvidia_backend, jemalloc, tmp_path):
    repo = tmp_path / "repo"
    fx.write_tiny_models(repo)
    for choice, preloaded in ((None, True), ("system", False)):
        with TritonServer(repo, binary=binary, backend="nvidia", allocator=choice,
                          log_path=tmp_path / f"{choice}.log") as server:
            with TritonClient(server.http_url, "http") as client:
                a, b = np.array([[1.0, 2.0, 3.0]], np.float32), np.array([[0.5, 0.5, 0.5]], np.float32)
                out = client.infer("pair", {"A__0": a, "B__1": b}, ["DIFF__0", "DOUBLE__1"])
            assert out["DIFF__0"].tolist() == (a - b).tolist() and out["DOUBLE__1"].tolist() == (a * 2).tolist()
            assert (str(jemalloc) in _mapped(server.pid)) is preloaded
            assert ("jemalloc preloaded" in server.describe()) is preloaded
            assert f"tei-export: memory: {server.memory.describe()}" in server.log_text()


def test_cli_flag(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    refused = CliRunner().invoke(main, ["serve", str(empty), "--allocator", "tcmalloc"])
    assert refused.exit_code != 0 and "'tcmalloc' is not one of 'jemalloc', 'system'" in refused.output
