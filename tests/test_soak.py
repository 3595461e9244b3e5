"""tei-export soak: a small real soak against a real tritonserver (every answer checked, the server's memory sampled),
its failure paths through the CLI, and the memory arithmetic on its own.

Small counts on purpose (the machine is shared); nothing here asserts anything about time. The 10,000-request runs
are in benchmarks/soak/.
"""
from __future__ import annotations

import json
import os
import shutil

import pytest
from click.testing import CliRunner

from exporter.cli import main
from exporter.checks.soak import SoakOptions, SoakReport, run_soak
from exporter.triton.memory import MemoryReport, MemorySample, group_rss_kb
from exporter.triton.process import free_port, group_alive
from exporter.triton.server import TritonServer

REPORT_KEYS = {"passed", "failures", "options", "model", "server", "server_version", "served_by", "backend", "cpu",
               "cores", "tolerance", "distinct_texts", "kind", "seconds", "requested", "sent", "ok", "failed",
               "seq_per_s", "inferences", "executions", "requests_per_execution", "protocols", "memory"}
MEMORY_KEYS = {"sampled", "note", "pgid", "interval_s", "warmup_requests", "limit_pct", "start_mb", "after_warmup_mb",
               "peak_mb", "end_mb", "growth_pct", "passed", "samples", "samples_columns"}


# ---------------------------------------------------------------------------------------------------------------
# The memory figures and the pass/fail rule, on constructed samples
# ---------------------------------------------------------------------------------------------------------------
def _memory(rss_mb: list[float], answered: list[int], warmup: int) -> MemoryReport:
    samples = [MemorySample(0.5 * i, a, int(mb * 1024), 1) for i, (mb, a) in enumerate(zip(rss_mb, answered))]
    return MemoryReport(True, pgid=1, warmup_requests=warmup, limit_pct=5.0, samples=samples)


def _report(memory: MemoryReport, sent: int = 10) -> SoakReport:
    from exporter.checks.soak import ProtocolResult

    return SoakReport(options={"requests": sent, "max_seconds": 60, "concurrency": 4, "protocols": ["grpc"],
                               "warmup_fraction": 0.1}, model="m", server="s", server_version="v", served_by="b",
                      backend="nvidia", cpu="c", cores=2, tolerance="t", distinct_texts=1, seconds=1.0,
                      protocols=[ProtocolResult("grpc", sent=sent, ok=sent, checked=sent)], memory=memory)


def test_memory_figures_are_taken_from_the_right_samples():
    rss, answered = [200.0, 240.0, 250.0, 262.0, 255.0], [0, 60, 100, 500, 1000]
    m = _memory(rss, answered, warmup=100)
    # start = the first sample, after warm-up = the first at or past 100 answered, peak = the largest, end = the last
    assert (m.start_mb, m.after_warmup_mb, m.peak_mb, m.end_mb) == (rss[0], rss[2], max(rss), rss[-1])
    assert m.growth_pct == pytest.approx(100 * (rss[-1] - rss[2]) / rss[2])
    assert m.passed and _report(m).passed and _report(m).failures() == []
    data = m.to_dict()
    assert set(data) == MEMORY_KEYS and len(data["samples"]) == len(rss)


def test_memory_that_keeps_growing_fails_the_soak():
    rss = [200.0 * 1.01 ** i for i in range(12)]  # +1 % per sample: well over 5 % from warm-up to the end
    m = _memory(rss, [100 * i for i in range(12)], warmup=100)
    assert m.growth_pct > 5 and m.passed is False
    report = _report(m)
    assert not report.passed and any("memory grew" in r for r in report.failures())
    assert "FAIL" in report.table()
    # a drop, or growth just under the bound, passes; a run that never got past warm-up has nothing to judge
    assert _memory([300, 300, 290], [0, 100, 200], warmup=100).passed
    assert _memory([300, 300, 314.9], [0, 100, 200], warmup=100).passed
    assert _memory([300, 300, 315.1], [0, 100, 200], warmup=100).passed is False
    assert _memory([300, 310], [0, 50], warmup=100).passed is False
    unsampled = MemoryReport(False, note="--url")
    assert unsampled.passed is None and _report(unsampled).passed and "not sampled (--url)" in \
        _report(unsampled).table()


def test_group_rss_reads_this_process_group():
    rss_kb, processes = group_rss_kb(os.getpgrp())
    own = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS:"))
    assert processes >= 1 and rss_kb >= own


# ---------------------------------------------------------------------------------------------------------------
# Real soaks
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def repo(minilm_export):
    return minilm_export.target.model_dir.parent


@pytest.fixture(scope="module")
def server(repo, binary):
    """The session's MiniLM export alone on a server of this module (NVIDIA's backend when it is built)."""
    with TritonServer(repo, binary=binary, model_control_mode="explicit", load_models=["minilm"]) as srv:
        yield srv


def test_soak_on_nvidia_backend_checks_every_answer_and_samples_memory(nvidia_backend, repo, server):
    requests = 240
    report = run_soak(SoakOptions(repo, "minilm", requests=requests, concurrency=16), server=server)
    assert report.served_by == server.backends.nvidia_label
    assert report.sent == report.ok == requests and report.failed == 0, report.table()
    for p in report.protocols:  # interleaved: half over each, every answer compared with the reference
        assert p.sent == p.ok == p.checked == requests // 2
        assert p.errors == p.timeouts == p.parity_failures == 0
        assert p.min_cosine >= 0.99999 and p.max_abs_diff <= 1e-5
    assert [p.protocol for p in report.protocols] == ["http", "grpc"]
    assert report.inferences == requests and 0 < report.executions <= requests
    m = report.memory
    assert m.sampled and m.pgid == server.pgid == server.pid
    assert len(m.samples) >= 3 and all(s.rss_kb > 0 and s.processes >= 1 for s in m.samples)
    assert m.samples[0].answered == 0 and m.samples[-1].answered == requests
    assert m.after_warmup_mb is not None and m.growth_pct is not None
    # Not asserted: the 5 % verdict, which a few hundred requests are too few to settle (benchmarks/soak/ holds
    # the 10,000-request runs).
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert set(data) == REPORT_KEYS and set(data["memory"]) == MEMORY_KEYS
    assert data["server_version"] == server.binary.version and data["cpu"]
    table = report.table()
    assert "requests per execution" in table and "after warm-up" in table and "served by: NVIDIA" in table


def test_soak_stops_at_its_time_bound(repo, server):
    report = run_soak(SoakOptions(repo, "minilm", requests=100_000, concurrency=4, protocols=("grpc",),
                                  max_seconds=1.0), server=server)
    assert 0 < report.sent < report.requested and report.failed == 0
    assert not report.passed and any("time bound" in r for r in report.failures())


def test_cli_soak_starts_its_own_compat_server(repo, tmp_path):
    res = CliRunner().invoke(main, ["soak", str(repo), "--model", "minilm", "--requests", "240", "--concurrency",
                                    "16", "--backend", "compat", "--json", "--out", str(tmp_path)])
    data = json.loads(res.stdout)
    assert res.exit_code == 0, res.output
    assert data["passed"] and data["backend"] == "compat" and data["served_by"] == "compatibility backend (model.py)"
    assert data["ok"] == data["sent"] == 240 and data["failed"] == 0
    assert {p["protocol"]: p["checked"] for p in data["protocols"]} == {"http": 120, "grpc": 120}
    memory = data["memory"]
    # the compatibility backend runs the model in a stub process of the server's group: both are counted
    assert memory["sampled"] and max(s[3] for s in memory["samples"]) >= 2
    assert not group_alive(memory["pgid"])  # stopped with its whole process group
    assert json.loads((tmp_path / "compat.json").read_text()) == data


def test_cli_soak_fails_when_answers_break_the_tolerance(repo, server, tmp_path):
    # The served model normalizes; a copy of its folder whose metadata says it does not makes the reference rows
    # un-normalized, so every answer is outside the tolerance and the soak must fail on each of them.
    wrong = tmp_path / "repo"
    shutil.copytree(repo / "minilm", wrong / "minilm")
    meta_path = wrong / "minilm" / "1" / "tei_export.json"
    meta = json.loads(meta_path.read_text())
    assert meta["normalize"] is True
    meta_path.write_text(json.dumps({**meta, "normalize": False}))
    res = CliRunner().invoke(main, ["soak", str(wrong), "--model", "minilm", "--url", server.grpc_url,
                                    "--requests", "24", "--concurrency", "4", "--json"])
    assert res.exit_code != 0
    data = json.loads(res.stdout)
    (grpc,) = data["protocols"]
    assert grpc["parity_failures"] == grpc["sent"] == 24 and grpc["errors"] == grpc["timeouts"] == 0
    assert data["memory"]["sampled"] is False and "--url" in data["memory"]["note"]
    assert "outside max|diff| <= 1e-05" in res.stderr and "error: the soak failed" in res.stderr


def test_cli_soak_against_a_dead_server_says_so(repo):
    url = f"127.0.0.1:{free_port()}"  # nothing listens there
    res = CliRunner().invoke(main, ["soak", str(repo), "--model", "minilm", "--url", url, "--protocol", "http",
                                    "--requests", "8"])
    assert res.exit_code != 0
    assert f"error: no Triton answers at {url} over http" in res.stderr and "Fix: start it" in res.stderr
