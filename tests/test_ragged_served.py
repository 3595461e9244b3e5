"""A ragged MiniLM export (``trace --batching ragged``) through a real tritonserver: it loads READY on NVIDIA's
LibTorch backend and on the compatibility backend, both give the same rows for concurrent requests of different
lengths (Triton merging them into one flat execution), and verify reports parity and requests per execution over
HTTP and gRPC, for token requests and for texts through the BLS text model."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from exporter.export.pipeline import ExportOptions, export_model
from exporter.tokens import encode_batch, load_tokenizer
from exporter.triton.server import TritonServer
from exporter.triton_client import TritonClient
from exporter.checks.verify import RAGGED_RUNS, verify_repository

BACKENDS = ("nvidia", "compat")


@pytest.fixture(scope="module")
def ragged_repo(minilm, tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo_ragged_served")
    export_model(minilm, ExportOptions(out=repo, name="mr", batching="ragged", max_batch_size=64,
                                       max_queue_delay_us=20000, ragged_token_budget=1024, with_tokenizer=True,
                                       tokenizer="python"))
    return repo


@pytest.fixture(scope="module")
def texts(st_model):
    from exporter.checks.corpus import build_corpus

    return [i.text for i in build_corpus(24, tokenizer=st_model.tokenizer, max_seq_len=st_model.max_seq_length)]


def _rows(server: TritonServer, requests: list[dict], concurrency: int) -> np.ndarray:
    def one(request):
        with TritonClient(server.grpc_url, "grpc") as client:
            return client.infer("mr", request, ["embedding"])["embedding"]

    with ThreadPoolExecutor(concurrency) as pool:
        return np.concatenate(list(pool.map(one, requests)), axis=0)


def _needs(backend: str, request) -> None:
    """NVIDIA's backend runs where the set-up built it (else the fixture skips, or fails under CI, saying why); the
    compatibility backend runs everywhere."""
    if backend == "nvidia":
        request.getfixturevalue("nvidia_backend")


@pytest.mark.parametrize("backend", BACKENDS)
def test_served_ragged_merges_and_matches_encode(backend, request, binary, ragged_repo, texts, st_model, tmp_path):
    _needs(backend, request)
    tokenizer = load_tokenizer(ragged_repo / "mr" / "1")
    requests = [encode_batch(tokenizer, [t], 256, ["input_ids"]) for t in texts]  # [1, L] each, unpadded
    assert len({r["input_ids"].shape[1] for r in requests}) > 10
    want = st_model.encode(texts, convert_to_numpy=True)
    with TritonServer(ragged_repo, binary=binary, backend=backend, log_path=tmp_path / "triton.log") as server:
        assert {"mr", "mr_text"} <= set(server.models)
        assert server.served_by("mr") == ("compatibility backend (model.py)" if backend == "compat"
                                          else server.backends.nvidia_label)
        with TritonClient(server.http_url, "http") as admin:
            before = admin.statistics("mr")
            got = _rows(server, requests, concurrency=16)
            after = admin.statistics("mr", at_least=before[0] + len(texts))
    assert np.abs(got - want).max() <= 1e-5
    requests_done, executions = after[0] - before[0], after[1] - before[1]
    assert requests_done == len(texts) and executions < requests_done, "different lengths should share executions"


def test_both_backends_give_the_same_rows(binary, nvidia_backend, ragged_repo, texts, tmp_path):
    tokenizer = load_tokenizer(ragged_repo / "mr" / "1")
    requests = [encode_batch(tokenizer, [t], 256, ["input_ids"]) for t in texts]
    rows = {}
    for backend in BACKENDS:
        with TritonServer(ragged_repo, binary=binary, backend=backend, model_control_mode="explicit",
                          load_models=["mr"], log_path=tmp_path / f"{backend}.log") as server:
            rows[backend] = _rows(server, requests, concurrency=8)
    assert np.abs(rows["nvidia"] - rows["compat"]).max() <= 1e-6


@pytest.mark.parametrize("backend", BACKENDS)
def test_verify_understands_ragged(backend, request, ragged_repo):
    _needs(backend, request)
    report = verify_repository(ragged_repo, corpus_size=16, libtorch=False, server_options={"backend": backend})
    assert report.passed, report.table()
    tokens = [c for c in report.checks if c.model == "mr"]
    assert {c.protocol for c in tokens} == {"http", "grpc"}
    for check in tokens:
        assert [r.label for r in check.runs] == [r.label for r in RAGGED_RUNS]  # one text per request
        assert check.requests == check.inferences  # one row per request
        assert check.executions < check.requests  # Triton merged requests of any length
    text = [c for c in report.checks if c.model == "mr_text"]
    assert len(text) == 2 and all(c.passed for c in text)
    assert "Python backend (one request per text to mr)" in text[0].served_by
    assert "requests per execution" in report.table()
    assert report.libtorch == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_text_model_sends_each_text_as_its_own_request(backend, request, binary, ragged_repo, texts, st_model,
                                                       tmp_path):
    """``mr_text`` (BLS): a request of N texts becomes N requests to ``mr`` (its inference count grows by N) and N
    rows in order, equal to encode(); a text that is not UTF-8 fails its own request, and the next one answers."""
    _needs(backend, request)

    def batch(chunk):
        return {"text": np.array([t.encode() for t in chunk], dtype=np.object_).reshape(-1, 1)}

    with TritonServer(ragged_repo, binary=binary, backend=backend, log_path=tmp_path / "triton.log") as server:
        with TritonClient(server.http_url, "http") as client:
            before = client.statistics("mr")
            got = client.infer("mr_text", batch(texts[:10]), ["embedding"])["embedding"]
            after = client.statistics("mr", at_least=before[0] + 10)
            with pytest.raises(InferenceServerException, match="not valid UTF-8"):
                client.infer("mr_text", {"text": np.array([[b"\xff bad"], [b"x"]], dtype=np.object_)},
                             ["embedding"])
            one = client.infer("mr_text", batch(texts[10:11]), ["embedding"])["embedding"]
    assert np.abs(got - st_model.encode(texts[:10])).max() <= 1e-5
    assert after[0] - before[0] == 10
    assert np.abs(one - st_model.encode(texts[10:11])).max() <= 1e-5
