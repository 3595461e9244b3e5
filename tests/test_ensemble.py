"""Text in, embeddings out: MiniLM exported with the tokenizer model and the ensemble, served by the real bundled
tritonserver (one server for the module), compared with ``SentenceTransformer.encode``."""
from __future__ import annotations

import json
import os
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from conftest import require_module  # noqa: E402
from exporter.checks.corpus import build_corpus  # noqa: E402
from exporter.export.pipeline import ExportOptions, export_model  # noqa: E402
from exporter.triton.server import TritonServer  # noqa: E402
from exporter.export.text_models import bucket_sizes, ensemble_config, tokenizer_config  # noqa: E402
from exporter.export.triton_config import parse_pbtxt  # noqa: E402
from exporter.triton_client import TritonClient  # noqa: E402

httpclient = require_module("tritonclient.http", part="tritonclient")
grpcclient = require_module("tritonclient.grpc", part="tritonclient")
from tritonclient.utils import InferenceServerException  # noqa: E402

NAME = "mini"


@pytest.fixture(scope="module")
def exported(minilm, tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo_text")
    result = export_model(minilm, ExportOptions(out=repo, name=NAME, max_batch_size=16, max_queue_delay_us=20000,
                                                with_tokenizer=True, tokenizer="python"))
    return repo, result


@pytest.fixture(scope="module")
def server(exported, binary, tmp_path_factory):
    srv = TritonServer(exported[0], binary=binary, cache_dir=tmp_path_factory.mktemp("backend-cache"),
                       log_path=tmp_path_factory.mktemp("logs") / "triton.log")
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def corpus(st_model):
    items = build_corpus(24, tokenizer=st_model.tokenizer, max_seq_len=st_model.max_seq_length)
    texts = [i.text for i in items] + [""]
    return texts, st_model.encode(texts, convert_to_numpy=True)


def _text_input(module, texts):
    item = module.InferInput("text", [len(texts), 1], "BYTES")
    item.set_data_from_numpy(np.array([t.encode("utf-8") if isinstance(t, str) else t for t in texts],
                                      dtype=np.object_).reshape(-1, 1))
    return [item]


def test_configs_parse_and_match_token_model(exported):
    repo, result = exported
    for folder in (f"{NAME}_tokenizer", f"{NAME}_text"):
        parse_pbtxt((repo / folder / "config.pbtxt").read_text(), where=folder)
        assert (repo / folder / "1").is_dir()
    tok = tokenizer_config(result.config)
    assert [(t.name, t.data_type) for t in tok.outputs] == [(t.name, t.data_type) for t in result.config.inputs]
    ens = parse_pbtxt(ensemble_config(result.config).render(template="ensemble.pbtxt.j2"))
    assert ens.platform == "ensemble" and [s.model_name for s in ens.ensemble_scheduling.step] == [
        f"{NAME}_tokenizer", NAME]
    assert (repo / f"{NAME}_tokenizer" / "1" / "tokenizer.json").is_file()
    assert bucket_sizes((), 128) == (16, 32, 64, 128) and bucket_sizes((8, 999), 256) == (8, 256)


def test_tokenizer_json_matches_hf(exported, corpus, st_model):
    """The served tokenizer (tokenizers.Tokenizer on tokenizer.json, truncation as model.py sets it) = AutoTokenizer."""
    import tokenizers

    repo, result = exported
    tok = tokenizers.Tokenizer.from_file(str(repo / f"{NAME}_tokenizer" / "1" / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length=result.spec.max_seq_len)
    texts = corpus[0]
    want = st_model.tokenizer(texts, truncation=True, max_length=result.spec.max_seq_len)["input_ids"]
    got = [e.ids for e in tok.encode_batch(texts, add_special_tokens=True)]
    assert got == want
    assert max(len(ids) for ids in got) == result.spec.max_seq_len  # the over-long case was truncated


def test_all_ready(server):
    client = httpclient.InferenceServerClient(server.http_url)
    for model in (NAME, f"{NAME}_tokenizer", f"{NAME}_text"):
        assert client.is_model_ready(model), model


@pytest.mark.parametrize("module", [httpclient, grpcclient], ids=["http", "grpc"])
def test_text_parity(server, corpus, module):
    texts, expected = corpus
    url = server.http_url if module is httpclient else server.grpc_url
    client = module.InferenceServerClient(url)
    got = np.concatenate([client.infer(f"{NAME}_text", _text_input(module, texts[i:i + 8])).as_numpy("embedding")
                          for i in range(0, len(texts), 8)])
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-5


def test_concurrent_text_requests_are_merged(server, st_model):
    texts = [f"sentence number {i} about embeddings" for i in range(32)]
    with TritonClient(server.grpc_url, "grpc") as admin:
        before = admin.statistics(NAME)

    def one(text):
        c = grpcclient.InferenceServerClient(server.grpc_url)
        return c.infer(f"{NAME}_text", _text_input(grpcclient, [text])).as_numpy("embedding")[0]

    with ThreadPoolExecutor(16) as pool:
        got = np.stack(list(pool.map(one, texts)))
    assert np.abs(got - st_model.encode(texts, convert_to_numpy=True)).max() <= 1e-5
    with TritonClient(server.grpc_url, "grpc") as admin:
        after = admin.statistics(NAME, at_least=before[0] + len(texts))
    inferences, executions = after[0] - before[0], after[1] - before[1]
    assert inferences == len(texts) and executions < inferences, (inferences, executions)


def test_non_utf8_is_a_clear_error_and_the_next_request_works(server):
    client = httpclient.InferenceServerClient(server.http_url)
    with pytest.raises(InferenceServerException, match="not valid UTF-8"):
        client.infer(f"{NAME}_text", _text_input(httpclient, [b"\xff\xfe bad"]))
    assert client.infer(f"{NAME}_text", _text_input(httpclient, ["fine"])).as_numpy("embedding").shape == (1, 384)


def test_raw_http_json(server, st_model):
    body = {"inputs": [{"name": "text", "shape": [1, 1], "datatype": "BYTES", "data": ["hello world"]}]}
    request = urllib.request.Request(f"http://{server.http_url}/v2/models/{NAME}_text/infer",
                                     data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.loads(response.read())
    out = answer["outputs"][0]
    assert out["name"] == "embedding" and out["shape"] == [1, 384]
    assert np.abs(np.array(out["data"]) - st_model.encode(["hello world"])[0]).max() <= 1e-5


def test_empty_string_gets_the_embedding_encode_gives_it(server, st_model):
    """An empty text is defined, not an error: [CLS] [SEP], exactly as SentenceTransformer.encode("") sees it."""
    body = {"inputs": [{"name": "text", "shape": [2, 1], "datatype": "BYTES", "data": ["", "not empty"]}]}
    request = urllib.request.Request(f"http://{server.http_url}/v2/models/{NAME}_text/infer",
                                     data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        out = json.loads(response.read())["outputs"][0]
    got = np.array(out["data"]).reshape(out["shape"])
    want = st_model.encode(["", "not empty"])
    assert np.abs(got - want).max() <= 1e-5 and np.linalg.norm(got[0]) > 0.99


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_verify_adds_text_check(server, exported, protocol):
    from exporter.checks.verify import Run, verify_repository

    url = server.http_url if protocol == "http" else server.grpc_url
    report = verify_repository(exported[0], url=url, protocols=(protocol,), corpus_size=12,
                               runs=(Run(4, 2),), libtorch=False)
    kinds = {c.kind: c for c in report.checks}
    assert set(kinds) == {"tokens", "text"} and report.passed, report.table()
    assert kinds["text"].model == f"{NAME}_text" and kinds["text"].max_abs_diff <= 1e-5
    assert "text, batch 4" in report.table()


def test_missing_tokenizers_says_what_to_install(exported, monkeypatch):
    """In a server Python without `tokenizers` (the NGC image) the model fails to load, naming the pip command."""
    import importlib.util
    import sys
    import types

    from exporter.text_backend import TOKENIZER_MODEL_PY

    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", types.ModuleType("triton_python_backend_utils"))
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # import fails
    spec = importlib.util.spec_from_file_location("tei_tokenizer_model", TOKENIZER_MODEL_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    folder = exported[0] / f"{NAME}_tokenizer"
    settings = json.loads((folder / "1" / "text_settings.json").read_text())
    with pytest.raises(RuntimeError, match=r"pip install tokenizers==" + settings["tokenizers_version"]):
        module.TritonPythonModel().initialize({"model_repository": str(folder), "model_version": "1",
                                               "model_config": "{}"})


def test_existing_text_model_refused_before_writing(tmp_path, minilm):
    from exporter.errors import RepositoryError

    (tmp_path / f"{NAME}_text" / "1").mkdir(parents=True)
    with pytest.raises(RepositoryError, match="already exists"):
        export_model(minilm, ExportOptions(out=tmp_path, name=NAME, with_tokenizer=True))
    assert not (tmp_path / NAME).exists()
