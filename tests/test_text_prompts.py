"""``trace --with-tokenizer --prompt-name NAME``: the prompt of config_sentence_transformers.json baked into the text
model. A query model and a document model are two exports of one random model with two prompts, served by NVIDIA's
LibTorch backend: each answers ``SentenceTransformer.encode(texts, prompt_name=NAME)`` (and not the other prompt's
rows), ``verify`` compares with the same, ``tei_export.json`` records the name, and a name the model lacks is an
error listing the names it has. The Python tokenizer model gets the name as its ``PROMPT_NAME`` parameter."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from exporter.checks.verify import verify_repository
from exporter.cli import main
from exporter.errors import UnsupportedModelError
from exporter.export.pipeline import ExportOptions, export_model
from exporter.export.text_models import served_prompt
from exporter.export.triton_config import parse_pbtxt
from exporter.triton.server import TritonServer
from exporter.triton_client import TritonClient

PROMPTS = {"query": "query: ", "document": "a passage of a document: "}
TEXTS = ["What is Triton?", "", "naïve café 中文", "an inference server " * 20]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    from model_factory import random_model

    return random_model(tmp_path_factory.mktemp("prompted_src") / "m", "bert", max_seq_length=32, seed=5,
                        prompts=PROMPTS)


@pytest.fixture(scope="module")
def repo(source, tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo_prompts")
    for name, prompt in (("q", "query"), ("d", "document")):
        export_model(source, ExportOptions(out=repo, name=name, max_batch_size=8, with_tokenizer=True,
                                           tokenizer="graph", prompt_name=prompt))
    return repo


@pytest.fixture(scope="module")
def st(source):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(source, device="cpu")


def _close(got: np.ndarray, want: np.ndarray) -> bool:
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    return got.shape == want.shape and np.abs(got - want).max() <= 1e-5 and cos.min() >= 0.99999


def test_recorded(repo):
    for name, prompt in (("q", "query"), ("d", "document")):
        meta = json.loads((repo / name / "1" / "tei_export.json").read_text())
        graph = json.loads((repo / f"{name}_text" / "1" / "text_graph.json").read_text())
        assert meta["text_prompt_name"] == prompt and meta["prompts"] == PROMPTS
        assert (graph["prompt_name"], graph["prompt"]) == (prompt, PROMPTS[prompt])
        assert served_prompt(repo, name).encode_kwargs() == {"prompt_name": prompt}


def test_served_rows_are_encode_with_the_prompt(binary, nvidia_backend, repo, st, tmp_path):
    batch = {"text": np.array([t.encode() for t in TEXTS], dtype=np.object_).reshape(-1, 1)}
    with TritonServer(repo, binary=binary, backend="nvidia", log_path=tmp_path / "triton.log") as server:
        with TritonClient(server.grpc_url, "grpc") as client:
            got = {n: client.infer(f"{n}_text", batch, ["embedding"])["embedding"] for n in ("q", "d")}
    query = st.encode(TEXTS, prompt_name="query", convert_to_numpy=True)
    document = st.encode(TEXTS, prompt_name="document", convert_to_numpy=True)
    assert _close(got["q"], query) and _close(got["d"], document)
    assert not _close(got["q"], document) and not _close(got["q"], st.encode(TEXTS, prompt="", convert_to_numpy=True))


def test_verify_compares_with_the_prompt(nvidia_backend, repo):
    report = verify_repository(repo, names=["q_text", "d_text"], corpus_size=8, libtorch=False,
                               protocols=("grpc",), server_options={"backend": "nvidia"})
    assert report.passed, report.table()
    assert sorted(c.model for c in report.checks) == ["d_text", "q_text"]


def test_unknown_prompt_name_lists_the_names(source, tmp_path):
    result = CliRunner().invoke(main, ["trace", source, "--out", str(tmp_path / "r"), "--with-tokenizer",
                                       "--prompt-name", "passage"])
    assert result.exit_code != 0
    assert "no prompt named 'passage'" in result.output and "document, query" in result.output, result.output
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())  # refused before writing anything
    ok = CliRunner().invoke(main, ["trace", source, "--out", str(tmp_path / "r3"), "--name", "d", "--with-tokenizer",
                                   "--prompt-name", "document", "--max-batch-size", "4"])
    assert ok.exit_code == 0, ok.output
    assert "text model prompt: document ('a passage of a document: ' before every text)" in ok.output
    with pytest.raises(UnsupportedModelError, match="--with-tokenizer"):
        export_model(source, ExportOptions(out=tmp_path / "r2", prompt_name="query"))


def test_python_tokenizer_model_gets_prompt_name(source, tmp_path):
    """--tokenizer python writes the name as the tokenizer model's PROMPT_NAME, which its model.py applies."""
    repo = tmp_path / "repo"
    export_model(source, ExportOptions(out=repo, name="p", max_batch_size=8, with_tokenizer=True,
                                       tokenizer="python", prompt_name="document"))
    config = parse_pbtxt((repo / "p_tokenizer" / "config.pbtxt").read_text())
    assert config.parameters["PROMPT_NAME"].string_value == "document"
    assert json.loads((repo / "p" / "1" / "tei_export.json").read_text())["text_prompt_name"] == "document"
    assert served_prompt(repo, "p").encode_kwargs() == {"prompt_name": "document"}
