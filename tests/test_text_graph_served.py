"""``<name>_text`` as one TorchScript model (``trace --with-tokenizer``, ``--tokenizer graph``) on NVIDIA's LibTorch
backend in the real bundled tritonserver: its config parses with Triton's protobuf, its rows equal
``SentenceTransformer.encode`` over HTTP and gRPC with requests merged, no Python runs anywhere (no stub in the
server's process group, no Python model in the repository), one invalid UTF-8 text does not fail the texts merged
with it, and ``verify`` reports the model for what it is. NVIDIA's newest backend (main) and the compatibility
backend serve it with the same rows."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import _triton_fixtures as fx
from exporter.checks.verify import verify_repository
from exporter.export.pipeline import ExportOptions, export_model
from exporter.export.triton_config import parse_pbtxt
from exporter.triton.server import TritonServer
from exporter.triton.stubs import stub_processes
from exporter.triton_client import TritonClient

NAME = "mg"
HOSTILE = ["", "   ", "[CLS] literal [SEP] tokens [MASK]", "naïve café 中文字 Ελληνικά русский", "👍🏽 👩‍👩‍👧‍👦 🇩🇪",
           "tab\tnew\nline\x00nul", "word " * 400]


@pytest.fixture(scope="module")
def repo(minilm, tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo_text_graph")
    export_model(minilm, ExportOptions(out=repo, name=NAME, max_batch_size=16, max_queue_delay_us=20000,
                                       with_tokenizer=True))
    return repo


@pytest.fixture(scope="module")
def texts(st_model):
    from exporter.checks.corpus import build_corpus

    items = build_corpus(24, tokenizer=st_model.tokenizer, max_seq_len=st_model.max_seq_length)
    return [i.text for i in items] + HOSTILE


@pytest.fixture(scope="module")
def server(binary, nvidia_backend, repo, tmp_path_factory):
    log = tmp_path_factory.mktemp("logs_text_graph") / "triton.log"
    with TritonServer(repo, binary=binary, backend="nvidia", log_path=log) as srv:
        yield srv


def _batch(texts) -> dict:
    return {"text": np.array([t if isinstance(t, bytes) else t.encode("utf-8") for t in texts],
                             dtype=np.object_).reshape(-1, 1)}


def _assert_close(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-5
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() >= 0.99999


def test_one_torchscript_model_and_its_config(repo):
    assert sorted(p.name for p in repo.iterdir()) == [NAME, f"{NAME}_text"]  # no tokenizer model, no ensemble
    assert sorted(p.name for p in (repo / f"{NAME}_text" / "1").iterdir()) == ["model.pt", "text_graph.json"]
    cfg = parse_pbtxt((repo / f"{NAME}_text" / "config.pbtxt").read_text())
    assert cfg.platform == "pytorch_libtorch" and not cfg.backend and cfg.max_batch_size == 16
    (text,) = cfg.input
    assert (text.name, text.data_type, list(text.dims)) == ("text", 13, [1])  # 13: TYPE_STRING
    assert text.HasField("reshape") and list(text.reshape.shape) == []
    assert [o.name for o in cfg.output] == ["embedding"] and cfg.HasField("dynamic_batching")
    assert cfg.model_warmup and cfg.model_warmup[0].inputs["text"].zero_data


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_served_rows_equal_encode(server, st_model, texts, protocol):
    want = st_model.encode(texts, convert_to_numpy=True)
    url = server.http_url if protocol == "http" else server.grpc_url
    name = f"{NAME}_text"
    with TritonClient(server.http_url, "http") as admin:
        before = admin.statistics(name)

        def one(text):
            with TritonClient(url, protocol) as client:
                return client.infer(name, _batch([text]), ["embedding"])["embedding"]

        with ThreadPoolExecutor(16) as pool:  # one text per request, as many clients send them
            got = np.concatenate(list(pool.map(one, texts)), axis=0)
        with TritonClient(url, protocol) as client:  # and requests of several texts
            several = np.concatenate([client.infer(name, _batch(texts[i:i + 5]), ["embedding"])["embedding"]
                                      for i in range(0, len(texts), 5)], axis=0)
        after = admin.statistics(name, at_least=before[0] + 2 * len(texts))
    _assert_close(got, want)
    _assert_close(several, want)
    assert after[1] - before[1] < len(texts) + len(range(0, len(texts), 5)), "the batcher merged no requests"


def test_no_python_anywhere(server, repo):
    """The server runs no Python backend stub (the Python text path starts one per tokenizer instance) and the
    repository holds no Python model."""
    members = fx.group_members(server.pgid)
    assert server.pid in members
    assert stub_processes(server.pid) == []
    for pid in members:
        assert not any("python_backend_stub" in arg for arg in fx.command_line(pid)), fx.command_line(pid)
    assert not list(repo.rglob("*.py"))
    for config in repo.glob("*/config.pbtxt"):
        parsed = parse_pbtxt(config.read_text())
        assert parsed.backend != "python" and parsed.platform == "pytorch_libtorch", config


def test_invalid_utf8_fails_no_merged_request(server, st_model):
    """An invalid text merged with valid ones: every request answers; the invalid one as Python's
    ``decode("utf-8", "replace")`` reads it."""
    texts = ["A man is eating food.", b"caf\xe9 \xff\xfe bytes \xe2\x82", "Embeddings!", b"\xc0\xaf", "a " * 30]
    want = st_model.encode([t.decode("utf-8", "replace") if isinstance(t, bytes) else t for t in texts],
                           convert_to_numpy=True)

    def one(text):
        with TritonClient(server.grpc_url, "grpc") as client:
            return client.infer(f"{NAME}_text", _batch([text]), ["embedding"])["embedding"]

    with ThreadPoolExecutor(len(texts)) as pool:
        rows = list(pool.map(one, texts * 4))
    _assert_close(np.concatenate(rows, axis=0), np.concatenate([want] * 4, axis=0))
    with TritonClient(server.http_url, "http") as client:  # one request holding the invalid texts among others
        _assert_close(client.infer(f"{NAME}_text", _batch(texts), ["embedding"])["embedding"], want)


def test_verify_understands_the_graph_text_model(nvidia_backend, repo):
    report = verify_repository(repo, corpus_size=16, libtorch=False, server_options={"backend": "nvidia"})
    assert report.passed, report.table()
    text = [c for c in report.checks if c.model == f"{NAME}_text"]
    assert {c.protocol for c in text} == {"http", "grpc"}
    for check in text:
        assert "one TorchScript model, no Python" in check.served_by, check.served_by
        assert "Python backend" not in check.served_by
        assert check.inferences >= check.texts_sent and check.executions > 0


def test_string_tensors_in_configs():
    """TYPE_STRING is accepted for a LibTorch input reshaped to one string per batch item, refused elsewhere."""
    from exporter.errors import ConfigError
    from exporter.export.triton_config import TensorConfig, TritonModelConfig

    out = (TensorConfig("embedding", "TYPE_FP32", (4,)),)
    TritonModelConfig("t", 8, (TensorConfig("text", "TYPE_STRING", (1,), reshape=()),), out)
    with pytest.raises(ConfigError, match="reshape"):
        TritonModelConfig("t", 8, (TensorConfig("text", "TYPE_STRING", (1,)),), out)
    with pytest.raises(ConfigError, match="output 'o'.data_type"):
        TritonModelConfig("t", 8, (TensorConfig("text", "TYPE_STRING", (1,), reshape=()),),
                          (TensorConfig("o", "TYPE_STRING", (1,)),))


@pytest.mark.parametrize("options", [{"batching": "ragged"}, {"int32": True}], ids=["ragged", "padded_int32"])
def test_graph_text_model_over_other_exports(tmp_path, options):
    """Around a ragged export's module and a padded int32 export's traced module, the text model (loaded back from
    model.pt) gives encode()'s rows."""
    import torch
    from model_factory import random_model
    from sentence_transformers import SentenceTransformer

    src = random_model(tmp_path / "src", "bert", max_seq_length=48)
    export_model(src, ExportOptions(out=tmp_path / "repo", name="m", max_batch_size=8, with_tokenizer=True,
                                    tokenizer="graph", **options))
    module = torch.jit.load(str(tmp_path / "repo" / "m_text" / "1" / "model.pt"))
    texts = ["short", "", "a longer text that the tokenizer cuts " * 8, "中文 naïve [SEP]"]
    want = SentenceTransformer(src, device="cpu").encode(texts, convert_to_numpy=True)
    with torch.inference_mode():
        _assert_close(module(texts).numpy(), want)


def test_served_on_the_newest_backend(binary, newest_backend, repo, st_model, texts, tmp_path):
    """NVIDIA's newest pytorch_backend (main) passes the strings the same way: the same rows, merged requests."""
    want = st_model.encode(texts, convert_to_numpy=True)
    with TritonServer(repo, binary=binary, backend="nvidia:main", log_path=tmp_path / "triton.log") as server:
        assert "(main)" in server.served_by(f"{NAME}_text")

        def one(text):
            with TritonClient(server.grpc_url, "grpc") as client:
                return client.infer(f"{NAME}_text", _batch([text]), ["embedding"])["embedding"]

        with ThreadPoolExecutor(8) as pool:
            got = np.concatenate(list(pool.map(one, texts)), axis=0)
    _assert_close(got, want)


def test_served_on_the_compatibility_backend(binary, repo, st_model, tmp_path):
    """The compatibility backend (Python-based, where NVIDIA's is not built) calls forward() with the strings too."""
    texts = ["hello world", "", "naïve 中文 [SEP]", b"x\xff y"]
    want = st_model.encode([t.decode("utf-8", "replace") if isinstance(t, bytes) else t for t in texts],
                           convert_to_numpy=True)
    with TritonServer(repo, binary=binary, backend="compat", log_path=tmp_path / "triton.log") as server:
        assert server.served_by(f"{NAME}_text") == "compatibility backend (model.py)"
        with TritonClient(server.grpc_url, "grpc") as client:
            got = client.infer(f"{NAME}_text", _batch(texts), ["embedding"])["embedding"]
    _assert_close(got, want)
