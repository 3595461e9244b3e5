"""int8 and bf16 exports of all-MiniLM-L6-v2 (real weights) through a real tritonserver: they pass their default
gates in trace, load READY on NVIDIA's LibTorch backend (aten::_int_mm in C++), its release for the bundled server
(r24.10) and its newest (main), and on the compatibility backend, answer concurrent requests that the dynamic
batcher merges with the very rows the in-process module gives each text alone, and stay within the recorded gate of
fp32 sentence-transformers. verify holds them, tokens and text over HTTP and gRPC, to both: the gate against fp32
eager and the fp32 bound against their own model.pt in process, and fails when the served model is not the export
it checks."""
from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from exporter.checks.own_module import EAGER, OWN
from exporter.checks.verify import verify_repository
from exporter.export.pipeline import ExportOptions, export_model
from exporter.tokens import encode_batch, load_tokenizer
from exporter.triton.server import TritonServer
from exporter.triton_client import TritonClient

NEWEST = "nvidia:main"  # NVIDIA's newest pytorch_backend, built by the test set-up (conftest's newest_backend)
BACKENDS = ("nvidia", NEWEST, "compat")
PRECISIONS = ("int8", "bf16")
INPUTS = ["input_ids", "attention_mask", "token_type_ids"]
TOKEN_MODELS = [f"m_{p}" for p in PRECISIONS]


@pytest.fixture(scope="module")
def lowp_repo(minilm, tmp_path_factory):
    # The Python text model: it pads each request to a length bucket, so the token model's rows stay those of the
    # module on that request alone (the graph text model: test_graph_text_model_rows_follow_the_merged_batch).
    repo = tmp_path_factory.mktemp("repo_precision_served")
    for precision in PRECISIONS:
        export_model(minilm, ExportOptions(out=repo, name=f"m_{precision}", precision=precision, max_batch_size=16,
                                           max_queue_delay_us=20000, with_tokenizer=True, tokenizer="python"))
    return repo


@pytest.fixture(scope="module")
def texts(st_model):
    from exporter.checks.corpus import build_corpus

    return [i.text for i in build_corpus(24, seed=5, tokenizer=st_model.tokenizer,
                                         max_seq_len=st_model.max_seq_length)]


def _needs(backend: str, request) -> str | None:
    """The NVIDIA branch ``backend`` serves with (None for the compatibility backend); skips or fails as the
    fixtures say when it is not built."""
    if backend == "nvidia":
        return request.getfixturevalue("nvidia_backend").branch
    if backend == NEWEST:
        return request.getfixturevalue("newest_backend").branch
    return None


def test_exports_pass_their_default_gates(lowp_repo):
    for precision, floor in (("int8", 0.99), ("bf16", 0.999)):
        meta = json.loads((lowp_repo / f"m_{precision}" / "1" / "tei_export.json").read_text())
        quality = meta["parity"]["quality"]
        assert quality["passed"] and quality["min_cosine"] >= floor and quality["texts"] >= 1000
        assert quality["row_independence_max_abs_diff"] <= 1e-6
        print(f"\nMiniLM {precision}: min cos {quality['min_cosine']:.5f}, mean {quality['mean_cosine']:.6f}, "
              f"top-10 overlap {quality['mean_top10_overlap']:.4f}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_served_rows_equal_the_module_alone_and_stay_in_the_gate(backend, request, binary, lowp_repo, texts,
                                                                 st_model, tmp_path):
    branch = _needs(backend, request)
    want_fp32 = st_model.encode(texts, convert_to_numpy=True)
    with TritonServer(lowp_repo, binary=binary, backend=backend, model_control_mode="explicit",
                      load_models=TOKEN_MODELS, log_path=tmp_path / "triton.log") as server:
        for precision in PRECISIONS:
            name = f"m_{precision}"
            assert server.backends.branch == branch
            assert server.served_by(name) == ("compatibility backend (model.py)" if branch is None
                                              else server.backends.nvidia_label)
            tokenizer = load_tokenizer(lowp_repo / name / "1")
            # one text per request, all padded to one length so the dynamic batcher merges them
            requests = [encode_batch(tokenizer, [t], 256, INPUTS, np.int64, (64, 256)) for t in texts]
            module = torch.jit.load(str(lowp_repo / name / "1" / "model.pt"))
            with torch.inference_mode():
                alone = np.concatenate([module(*(torch.from_numpy(r[k]) for k in INPUTS)).numpy()
                                        for r in requests])

            def one(request_arrays):
                with TritonClient(server.grpc_url, "grpc") as client:
                    return client.infer(name, request_arrays, ["embedding"])["embedding"]

            with TritonClient(server.http_url, "http") as admin:
                before = admin.statistics(name)
                with ThreadPoolExecutor(8) as pool:
                    got = np.concatenate(list(pool.map(one, requests)))
                after = admin.statistics(name, at_least=before[0] + len(texts))
            assert after[1] - before[1] < len(texts), "the dynamic batcher should merge concurrent requests"
            assert np.abs(got - alone).max() <= 1e-6, f"{precision}: a row changed inside a merged batch"
            meta = json.loads((lowp_repo / name / "1" / "tei_export.json").read_text())
            cos = (got * want_fp32).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want_fp32, axis=1)
            assert cos.min() >= meta["parity"]["quality"]["bounds"]["min_cosine"]


@pytest.mark.parametrize("backend", ("nvidia", NEWEST))
def test_verify_holds_them_to_their_gate_and_their_own_module(backend, request, lowp_repo):
    branch = _needs(backend, request)
    report = verify_repository(lowp_repo, corpus_size=16, libtorch=backend == "nvidia",
                               server_options={"backend": backend})
    print("\n" + report.table())
    assert report.passed, report.table()
    assert {(c.model, c.protocol) for c in report.checks} == {
        (f"{m}{suffix}", protocol) for m in TOKEN_MODELS for suffix in ("", "_text") for protocol in ("http", "grpc")}
    for check in report.checks:
        assert f"libtriton_pytorch.so ({branch})" in check.served_by, (check.model, check.served_by)
        assert [ref.name for ref in check.references] == [EAGER, OWN]
        gate = json.loads((lowp_repo / check.model.removesuffix("_text") / "1" / "tei_export.json").read_text())
        assert check.references[0].tolerance.min_cosine == gate["parity"]["quality"]["bounds"]["min_cosine"]
        assert all(len(run.comparisons) == 2 for run in check.runs) and len(check.runs) == 4
        # the served rows are the module's own to the fp32 bound, and measurably not fp32's
        assert max(c.max_abs_diff for c in check.against(OWN)) <= 1e-5
        assert max(c.max_abs_diff for c in check.against(EAGER)) > 1e-4
    if backend == "nvidia":
        assert all(r.get("ok") for r in report.libtorch), report.libtorch  # the C++ LibTorch loader runs them too


def test_verify_fails_when_the_served_model_is_not_the_export(binary, nvidia_backend, lowp_repo, tmp_path):
    """A repository whose m_bf16 is really the int8 export (a stale copy, as after a re-export that was not
    deployed), checked against a server that serves the bf16 one: the bf16 rows are well inside the int8 gate of
    fp32 eager, so only the comparison with the export's own module can fail, and it must."""
    stale = tmp_path / "stale"
    shutil.copytree(lowp_repo / "m_int8", stale / "m_bf16")
    config = stale / "m_bf16" / "config.pbtxt"
    config.write_text(config.read_text().replace('name: "m_int8"', 'name: "m_bf16"'))
    with TritonServer(lowp_repo, binary=binary, backend="nvidia", model_control_mode="explicit",
                      load_models=["m_bf16"], log_path=tmp_path / "triton.log") as server:
        for url, protocol in ((server.http_url, "http"), (server.grpc_url, "grpc")):
            report = verify_repository(stale, url=url, protocols=(protocol,), names=["m_bf16"], corpus_size=16,
                                       libtorch=False)
            check, = report.checks
            assert check.error is None and check.references[1].describe.startswith("its own int8 model.pt")
            assert all(c.passed for c in check.against(EAGER)), report.table()  # within the int8 gate
            assert not any(c.passed for c in check.against(OWN)), report.table()
            assert min(c.max_abs_diff for c in check.against(OWN)) > 1e-3
            assert not report.passed and "against own module" in check.worst_text



@pytest.fixture(scope="module")
def graph_repo(minilm, tmp_path_factory):
    """int8 MiniLM with the graph text model (``--with-tokenizer``'s default for WordPiece)."""
    repo = tmp_path_factory.mktemp("repo_precision_graph")
    export_model(minilm, ExportOptions(out=repo, name="g", precision="int8", max_batch_size=16,
                                       max_queue_delay_us=20000, with_tokenizer=True, tokenizer="graph"))
    return repo


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "finding: the graph text model of an int8 MiniLM export gives a text a row that moves by ~1e-3 with the other "
    "texts of its execution (its ragged encoder pads each chunk to the chunk's longest text; a different padded "
    "length flips int8 roundings), as a ragged export's rows do (README, 'What padding does')"))
def test_graph_text_model_rows_do_not_depend_on_the_other_texts(graph_repo, texts):
    """Issue 17's row independence, for ``--with-tokenizer`` with the graph text model: the same text alone and among
    others within 1e-6. The padded token model keeps it (equal lengths merge; the gate checks it); the text model's
    ragged chunks do not. Strict: it fails the day they do, and verify's MERGE_NOTE must go then."""
    module = torch.jit.load(str(graph_repo / "g_text" / "1" / "model.pt"))
    with torch.inference_mode():
        together = module(texts[:8])
        alone = torch.cat([module([t]) for t in texts[:8]])
    moved = float((alone - together).abs().max())
    print(f"\nint8 graph text model: a row alone vs among 8 texts moves by {moved:.2e}")
    assert moved <= 1e-6


def test_verify_compares_a_graph_text_model_with_its_own_module_one_text_at_a_time(graph_repo, nvidia_backend):
    """Where rows move with what Triton merges, verify compares the own module on the run with one text in flight
    (an execution is then exactly that text) and says so; the gate of fp32 eager holds on every run."""
    report = verify_repository(graph_repo, corpus_size=16, libtorch=False, server_options={"backend": "nvidia"})
    print("\n" + report.table())
    assert report.passed, report.table()
    text_checks = [c for c in report.checks if c.model == "g_text"]
    assert {c.protocol for c in text_checks} == {"http", "grpc"}
    for check in text_checks:
        assert "one text in flight" in check.note and "one text in flight" in report.table()
        own = {run.label: run.comparisons[1] for run in check.runs if len(run.comparisons) == 2}
        assert list(own) == ["text, batch 1 x concurrency 1"] and own[check.runs[0].label].max_abs_diff <= 1e-5
        assert all(c.passed for c in check.against(EAGER)) and len(check.against(EAGER)) == 4
    for check in report.checks:
        if check.model == "g":  # the padded token model: every run against its own module
            assert check.note is None and len(check.against(OWN)) == 4


def test_a_bf16_export_writes_its_graph_text_model_within_its_gate(minilm, texts, st_model, tmp_path):
    """The graph text model of a lossy export is held to the gate the export recorded against fp32
    sentence-transformers, as verify holds it served. (It was held to --dtype bfloat16's bound, cosine >= 0.9999,
    which MiniLM's bf16 rows miss at 0.99988 while passing their gate of 0.999: trace refused the text model.)"""
    repo = tmp_path / "repo"
    result = export_model(minilm, ExportOptions(out=repo, name="b", precision="bf16", max_batch_size=16,
                                                with_tokenizer=True, tokenizer="graph"))
    gate = result.metadata.parity["quality"]["bounds"]["min_cosine"]
    parity = json.loads((repo / "b_text" / "1" / "text_graph.json").read_text())["parity"]
    assert parity["passed"] and parity["tolerance"]["min_cosine"] == gate == 0.999
    module = torch.jit.load(str(repo / "b_text" / "1" / "model.pt"))
    with torch.inference_mode():
        got = module(texts).double().numpy()
    want = st_model.encode(texts, convert_to_numpy=True).astype(np.float64)
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    print(f"\nMiniLM bf16 graph text model vs fp32 encode(): min cosine {cos.min():.6f}")
    assert gate <= cos.min() < 1.0 - 1e-6  # within the gate, and really bf16
