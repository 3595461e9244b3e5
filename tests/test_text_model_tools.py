"""soak, tune and the C++ LibTorch check on the graph text model ``<name>_text`` (UTF-8 strings in, a tokenizer
inside the TorchScript graph, exported with a prompt): a real tritonserver with NVIDIA's backend, answers compared
with ``SentenceTransformer.encode(texts, prompt_name=...)``, and the C++ check calling forward() with a
``List[str]`` as NVIDIA's backend does. Small counts: the machine is shared."""
from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from exporter.checks.soak import SoakOptions, run_soak
from exporter.cli import main
from exporter.errors import TeiExportError
from exporter.export.pipeline import ExportOptions, export_model
from exporter.export.triton_config import parse_pbtxt
from exporter.triton.server import TritonServer

PROMPTS = {"query": "query: ", "document": "passage: "}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    from model_factory import random_model

    return random_model(tmp_path_factory.mktemp("text_tools_src") / "m", "bert", max_seq_length=48, seed=3,
                        prompts=PROMPTS)


@pytest.fixture(scope="module")
def repo(source, tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo_text_tools")
    export_model(source, ExportOptions(out=repo, name="m", max_batch_size=16, with_tokenizer=True,
                                       tokenizer="graph", prompt_name="query"))
    return repo


def test_cli_soak_sends_texts_to_the_text_model(nvidia_backend, repo):
    res = CliRunner().invoke(main, ["soak", str(repo), "--model", "m_text", "--requests", "120", "--concurrency",
                                    "8", "--corpus-size", "8", "--backend", "nvidia", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["passed"] and data["kind"] == "text" and data["model"] == "m_text"
    assert "libtriton_pytorch.so" in data["served_by"] or "NVIDIA" in data["served_by"], data["served_by"]
    assert data["ok"] == data["sent"] == 120 and data["failed"] == 0
    assert {p["protocol"]: p["checked"] for p in data["protocols"]} == {"http": 60, "grpc": 60}
    # one text per request; the text model's own statistics count them
    assert data["inferences"] == 120 and 0 < data["executions"] <= 120


def test_soak_compares_with_the_text_models_prompt(nvidia_backend, binary, repo, tmp_path):
    """Against a copy of the repository whose text model claims no prompt, the served rows (made with the query
    prompt) are outside the tolerance for every text: the soak's reference really is encode() with the prompt."""
    wrong = tmp_path / "repo"
    shutil.copytree(repo, wrong)
    graph = wrong / "m_text" / "1" / "text_graph.json"
    graph.write_text(json.dumps({**json.loads(graph.read_text()), "prompt_name": None, "prompt": ""}))
    with TritonServer(repo, binary=binary, backend="nvidia", model_control_mode="explicit",
                      load_models=["m_text"], log_path=tmp_path / "triton.log") as server:
        right = run_soak(SoakOptions(repo, "m_text", requests=40, concurrency=4, protocols=("grpc",),
                                     corpus_size=4), server=server)
        bad = run_soak(SoakOptions(wrong, "m_text", requests=40, concurrency=4, protocols=("grpc",),
                                   corpus_size=4), server=server)
    assert right.ok == 40 and right.failed == 0, right.table()
    assert bad.protocols[0].parity_failures == 40 and not bad.passed


def test_tune_sweeps_the_graph_text_model(nvidia_backend, repo, tmp_path):
    copy = tmp_path / "repo"
    shutil.copytree(repo, copy)
    config = copy / "m_text" / "config.pbtxt"
    res = CliRunner().invoke(main, ["tune", str(copy), "--model", "m_text", "--intra", "1", "--instances", "1",
                                    "--queue-delay-us", "0,3000", "--max-trials", "2", "--max-seconds", "0.5",
                                    "--max-calls", "40", "--concurrency", "4", "--backend", "nvidia", "--write",
                                    "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert [r["trial"]["max_queue_delay_us"] for r in report["results"]] == [0, 3000]
    for r in report["results"]:  # each trial served the rewritten config and answered encode(prompt_name="query")
        assert r["error"] is None and r["parity_passed"] and r["requests"] > 0, r
    assert report["written"] == str(config)
    written = parse_pbtxt(config.read_text())
    (text,) = written.input
    assert text.data_type == 13 and list(text.reshape.shape) == [] and written.platform == "pytorch_libtorch"
    assert written.dynamic_batching.max_queue_delay_microseconds == report["best"]["trial"]["max_queue_delay_us"]
    assert "List[str]" in config.read_text()  # the graph text template's note is kept


@pytest.fixture(scope="module")
def python_repo(source, tmp_path_factory):
    """The Python text models (tokenizer model + ensemble) with the document prompt as their PROMPT_NAME."""
    repo = tmp_path_factory.mktemp("repo_text_tools_python")
    export_model(source, ExportOptions(out=repo, name="p", max_batch_size=8, with_tokenizer=True,
                                       tokenizer="python", prompt_name="document"))
    return repo


def test_tune_refuses_a_python_text_model(python_repo):
    from exporter.tune import TuneOptions, run_tune

    with pytest.raises(TeiExportError, match="Python text model") as err:
        run_tune(TuneOptions(python_repo, "p_text"))
    assert "--tokenizer graph" in err.value.fix


def test_soak_of_a_python_text_model_loads_what_it_calls(nvidia_backend, python_repo):
    """Its own server loads the ensemble with the tokenizer and token models (explicit model control), and every
    answer is encode(prompt_name="document"), the prompt the tokenizer model's PROMPT_NAME names."""
    report = run_soak(SoakOptions(python_repo, "p_text", requests=40, concurrency=4, protocols=("grpc",),
                                  corpus_size=4, backend="nvidia"))
    assert report.ok == 40 and report.failed == 0 and report.kind == "text", report.table()


def test_check_libtorch_calls_the_text_model_with_a_list_of_strings(cxx_compiler, repo, tmp_path):
    """The C++ checker (compiled against the installed LibTorch) loads m_text/1/model.pt and calls forward() with one
    List[str] per case, as NVIDIA's backend passes merged requests; every row equals encode(prompt_name="query"),
    invalid UTF-8 read as decode("utf-8", "replace")."""
    res = CliRunner().invoke(main, ["check-libtorch", str(repo / "m_text"), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["ok"] and not report["skipped"] and report["kind"] == "text", report
    texts = report["cases"] - 3  # all, a shorter list, each alone, all again
    assert texts >= 10 and report["rows"] == 2 * texts + texts + max(2, texts // 2)
    assert report["max_abs_diff"] <= 1e-5 and report["min_cosine"] >= 0.99999
    assert "List[str]" in report["details"][0]


def test_check_libtorch_text_model_fails_on_a_wrong_prompt(cxx_compiler, repo, tmp_path):
    """The same model.pt compared with encode() told no prompt (the copy's text_graph.json says none): it fails."""
    from exporter.checks.libtorch_check import check_libtorch

    wrong = tmp_path / "repo"
    shutil.copytree(repo, wrong)
    graph = wrong / "m_text" / "1" / "text_graph.json"
    graph.write_text(json.dumps({**json.loads(graph.read_text()), "prompt_name": None, "prompt": ""}))
    report = check_libtorch(wrong / "m_text", texts=["What is Triton?", b"caf\xe9", ""])
    assert not report.ok and report.cases == 6 and "differs from encode()" in report.error, report


def test_verify_runs_the_cpp_check_of_the_text_model(cxx_compiler, nvidia_backend, repo):
    from exporter.checks.verify import verify_repository

    report = verify_repository(repo, names=["m_text"], corpus_size=4, protocols=("grpc",),
                               server_options={"backend": "nvidia"})
    assert report.passed, report.table()
    checked = {r["model"]: r for r in report.libtorch}
    assert set(checked) == {"m", "m_text"} and checked["m_text"]["kind"] == "text" and checked["m_text"]["ok"]
    assert "libtorch C++ check of m_text: ok" in report.table()
