"""Trace options users combine, exported as a user runs `tei-export trace` (tests/conftest.py's OPTION_EXPORTS) and
checked against sentence-transformers built here with the same overrides (not read back from the export's metadata):
`--token-embeddings` values in process and served, `--int32` served padded, ragged and through `--with-tokenizer`,
a valid `--max-seq-len`, a `--pooling` override on a model that has pooling metadata, a forced `--normalize`, ELECTRA
and CamemBERT, and a bf16 export's config and served rows. Everything served runs on NVIDIA's backend, in one server.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import OPTION_EXPORTS
from exporter.export.triton_config import parse_pbtxt
from exporter.triton.server import TritonServer
from exporter.triton_client import TritonClient

TEXTS = [
    "Triton serves TorchScript models.",
    "Embeddings!",
    "a",
    "Ünïcödé text, and an emoji 🙂 in it",
    # longer than --max-seq-len 24 and than the models' max_seq_length 64: truncated as the reference truncates
    " ".join(f"word{k}" for k in range(20)),
    " ".join(f"word{k} and another token" for k in range(40)),
]
# {export: (source, pooling, normalize, max_seq_len)}: what each export must compute, stated here, not read from it
REFERENCE = {
    "plain": ("bert", "mean", True, 64),
    "tokens": ("bert", "mean", True, 64),
    "i32": ("bert", "mean", True, 64),
    "i32_ragged": ("bert", "mean", True, 64),
    "i32_text": ("bert", "mean", True, 64),
    "msl24": ("bert", "mean", True, 24),
    "cls": ("bert", "cls", True, 64),
    "forced_norm": ("raw", "mean", True, 64),
    "electra": ("electra", "mean", True, 64),
    "camembert": ("camembert", "mean", True, 64),
    "bf16": ("bert", "mean", True, 64),
    "prompted": ("bert", "mean", True, 64),  # the same weights; the prompt is prepended to the texts below
}
FP32_BOUND = (1e-5, 0.99999)  # max |diff|, min cosine per row (the exporter's fp32 bound)
BF16_BOUND = (None, 0.9999)
PADDED = ("plain", "tokens", "i32", "msl24", "cls", "forced_norm", "electra", "camembert", "bf16")


def test_every_export_has_a_reference():
    assert set(REFERENCE) == set(OPTION_EXPORTS)


def _reference(path: str, pooling: str, normalize: bool, max_seq_len: int):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    transformer = Transformer(path, max_seq_length=max_seq_len, model_kwargs={"dtype": torch.float32})
    modules = [transformer, Pooling(transformer.get_embedding_dimension(), pooling_mode=pooling)]
    return SentenceTransformer(modules=modules + ([Normalize()] if normalize else []), device="cpu")


@pytest.fixture(scope="module")
def references(tiny_models):
    """{export: (SentenceTransformer, its rows for TEXTS, its token embeddings per text)}."""
    built = {}
    for name, (source, pooling, normalize, max_len) in REFERENCE.items():
        st = _reference(tiny_models[source], pooling, normalize, max_len)
        rows = st.encode(TEXTS, convert_to_numpy=True)
        tokens = [t.numpy() for t in st.encode(TEXTS, output_value="token_embeddings")]
        built[name] = (st, rows, tokens)
    return built


def _assert_close(got: np.ndarray, expected: np.ndarray, bound=FP32_BOUND, what=""):
    max_abs, min_cos = bound
    assert got.shape == expected.shape, (what, got.shape, expected.shape)
    got, expected = got.astype(np.float64), expected.astype(np.float64)
    cos = (got * expected).sum(-1) / (np.linalg.norm(got, axis=-1) * np.linalg.norm(expected, axis=-1))
    diff = float(np.abs(got - expected).max())
    assert cos.min() >= min_cos, f"{what}: min cosine {cos.min():.7f} < {min_cos} (max|diff| {diff:.2e})"
    if max_abs is not None:
        assert diff <= max_abs, f"{what}: max|diff| {diff:.2e} > {max_abs}"


def _tokens(st, texts, names, dtype):
    enc = st.tokenizer(list(texts), padding=True, truncation=True, max_length=st.max_seq_length, return_tensors="np")
    return {n: enc[n].astype(dtype) for n in names}


# ------------------------------------------------------------------------------------------------ what was written
def test_configs_declare_what_the_options_ask(options_repo):
    from tritonclient.grpc.model_config_pb2 import DataType

    def config(name):
        return parse_pbtxt((options_repo / name / "config.pbtxt").read_text())

    def types(tensors):
        return [DataType.Name(t.data_type) for t in tensors]

    def meta(name):
        return json.loads((options_repo / name / "1" / "tei_export.json").read_text())

    assert types(config("i32").input) == ["TYPE_INT32"] * 3 and types(config("plain").input) == ["TYPE_INT64"] * 3
    assert [i.name for i in config("i32_ragged").input] == ["input_ids"]
    assert types(config("i32_ragged").input) == ["TYPE_INT32"]
    assert [o.name for o in config("tokens").output] == ["embedding", "token_embeddings"]
    assert list(config("tokens").output[1].dims) == [-1, 32]
    assert (meta("msl24")["max_seq_len"], meta("cls")["pooling"], meta("forced_norm")["normalize"]) == (24, "cls", True)
    # bf16: inputs stay INT64 and the output FP32 (the LibTorch backend has no BF16 type)
    bf16 = config("bf16")
    assert types(bf16.input) == ["TYPE_INT64"] * 3 and types(bf16.output) == ["TYPE_FP32"]
    assert meta("bf16")["dtype"] == "bfloat16"
    text_models = {f"{m}_{k}" for m in ("i32_text", "msl24", "prompted") for k in ("tokenizer", "text")}
    assert {p.name for p in options_repo.iterdir()} == set(OPTION_EXPORTS) | text_models


def test_token_embeddings_values_in_process(options_repo, references):
    """model.pt of a --token-embeddings export returns (embedding, token_embeddings): both equal the reference's
    sentence embedding and its per-token embeddings (the transformer's last hidden state), row by row."""
    st, rows, tokens = references["tokens"]
    model = torch.jit.load(str(options_repo / "tokens" / "1" / "model.pt"))
    names = ("input_ids", "attention_mask", "token_type_ids")
    batch = _tokens(st, TEXTS, names, np.int64)
    with torch.inference_mode():
        embedding, token_embeddings = model(*(torch.from_numpy(batch[n]) for n in names))
    _assert_close(embedding.numpy(), rows, what="embedding")
    mask = batch["attention_mask"].astype(bool)
    for k, expected in enumerate(tokens):
        _assert_close(token_embeddings[k].numpy()[mask[k]], expected, what=f"token embeddings of text {k}")


# ------------------------------------------------------------------------------------------------ served
@pytest.fixture(scope="module")
def server(options_repo, binary, nvidia_backend, tmp_path_factory):
    log = tmp_path_factory.mktemp("options_server") / "triton.log"
    with TritonServer(options_repo, binary=binary, backend="nvidia", log_path=log) as srv:
        yield srv


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_padded_exports_served_on_nvidia_backend(server, references, protocol):
    url = server.http_url if protocol == "http" else server.grpc_url
    with TritonClient(url, protocol) as client:
        for name in PADDED:
            assert server.served_by(name) == server.backends.nvidia_label, name
            served = client.model(name)
            dtypes = {t.numpy_dtype for t in served.inputs}
            assert dtypes == {np.int32 if name == "i32" else np.int64}, (name, dtypes)
            st, rows, tokens = references[name]
            batch = _tokens(st, TEXTS, [t.name for t in served.inputs], dtypes.pop())
            outputs = [t.name for t in served.outputs]
            got = client.infer(name, batch, outputs)
            _assert_close(got["embedding"], rows, BF16_BOUND if name == "bf16" else FP32_BOUND, f"{name} {protocol}")
            if name == "tokens":
                assert outputs == ["embedding", "token_embeddings"]
                mask = batch["attention_mask"].astype(bool)
                for k, expected in enumerate(tokens):
                    _assert_close(got["token_embeddings"][k][mask[k]], expected, what=f"served token embeddings {k}")


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_int32_ragged_served_one_text_per_request(server, references, protocol):
    st, rows, _ = references["i32_ragged"]
    url = server.http_url if protocol == "http" else server.grpc_url
    with TritonClient(url, protocol) as client:
        (served,) = client.model("i32_ragged").inputs
        assert (served.name, served.numpy_dtype) == ("input_ids", np.int32)
        before = client.statistics("i32_ragged")[0]
        got = [client.infer("i32_ragged", _tokens(st, [text], ["input_ids"], np.int32), ["embedding"])["embedding"]
               for text in TEXTS]
        assert client.statistics("i32_ragged", at_least=before + len(TEXTS))[0] == before + len(TEXTS)
    _assert_close(np.concatenate(got), rows, what=f"i32_ragged {protocol}")


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("name", ["i32_text", "msl24"])
def test_text_in_with_int32_and_with_max_seq_len(server, references, name, protocol):
    """Text through the tokenizer model and the ensemble: `--with-tokenizer --int32`, and `--max-seq-len 24`, which
    only the tokenizer model applies (a token model computes whatever length it is sent)."""
    st, rows, _ = references[name]
    url = server.http_url if protocol == "http" else server.grpc_url
    with TritonClient(url, protocol) as client:
        text = np.array([[t.encode()] for t in TEXTS], dtype=np.object_)
        got = client.infer(f"{name}_text", {"text": text}, ["embedding"])["embedding"]
        assert {t.numpy_dtype for t in client.model(name).inputs} == {np.int32 if name == "i32_text" else np.int64}
    assert server.served_by(name) == server.backends.nvidia_label
    _assert_close(got, rows, what=f"{name}_text {protocol}")


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_text_in_with_a_prompt(server, references, protocol):
    """The tokenizer model's PROMPT_NAME (set to "query" as the README says) prepends the model's "query: " prompt:
    the rows are encode() of the prompted texts, and not those of the bare ones."""
    st, bare, _ = references["prompted"]
    expected = st.encode([f"query: {t}" for t in TEXTS], convert_to_numpy=True)
    url = server.http_url if protocol == "http" else server.grpc_url
    with TritonClient(url, protocol) as client:
        text = np.array([[t.encode()] for t in TEXTS], dtype=np.object_)
        got = client.infer("prompted_text", {"text": text}, ["embedding"])["embedding"]
    _assert_close(got, expected, what=f"prompted_text {protocol}")
    assert np.abs(got - bare).max() > 1e-3
