"""The sentence-transformers module chain inside the exported graph: Dense with its activation, LayerNorm,
Normalize, Matryoshka --dims, and modules that cannot be exported refused by name. The reference is always
sentence-transformers itself, loading the saved folder."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from model_factory import random_model

from exporter.errors import TeiExportError
from exporter.export.pipeline import ExportOptions, export_model

TEXTS = ["a short one", "a somewhat longer sentence about embeddings and servers", "x"]


@pytest.fixture(scope="module")
def dense_norm_model(tmp_path_factory):
    """A random BERT saved by SentenceTransformer.save() with Pooling -> Dense(tanh) -> LayerNorm -> Normalize."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules.dense import Dense
    from sentence_transformers.base.modules.normalize import Normalize
    from sentence_transformers.base.modules.transformer import Transformer
    from sentence_transformers.sentence_transformer.modules.layer_norm import LayerNorm
    from sentence_transformers.sentence_transformer.modules.pooling import Pooling

    root = tmp_path_factory.mktemp("chain")
    hf = random_model(root / "hf", "bert", st_metadata=False)
    torch.manual_seed(5)
    norm = LayerNorm(16)
    with torch.no_grad():  # not the identity it starts as, so a missing LayerNorm shows
        norm.norm.weight.uniform_(0.5, 1.5)
        norm.norm.bias.uniform_(-0.2, 0.2)
    st = SentenceTransformer(modules=[Transformer(hf, max_seq_length=64), Pooling(32, pooling_mode="mean"),
                                      Dense(32, 16, activation_function=torch.nn.Tanh()), norm, Normalize()],
                             device="cpu")
    st.save(str(root / "st"))
    return str(root / "st")


def _encode(src: str, **kwargs) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(src, device="cpu", **{k: v for k, v in kwargs.items() if k == "truncate_dim"}).encode(
        TEXTS, normalize_embeddings=kwargs.get("normalize_embeddings", False))


def _served_rows(result, texts) -> np.ndarray:
    """The saved model.pt on the tokenizer's own padded batch (what a client sends)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(result.target.version_dir / "tokenizer"))
    enc = tokenizer(texts, padding=True, truncation=True, max_length=result.spec.max_seq_len, return_tensors="pt")
    module = torch.jit.load(str(result.target.version_dir / "model.pt"))
    with torch.inference_mode():
        return module(*(enc[n] for n in result.spec.input_names)).numpy()


def test_dense_and_layernorm_are_inside_the_graph(dense_norm_model, tmp_path):
    result = export_model(dense_norm_model, ExportOptions(out=tmp_path, name="chain", max_batch_size=4))
    assert [m["kind"] for m in result.metadata.modules] == ["Pooling", "Dense", "LayerNorm", "Normalize"]
    assert result.parity.passed, result.parity.table()
    assert result.config.outputs[0].dims == (16,)
    got = _served_rows(result, TEXTS)
    assert got.shape == (3, 16)
    assert np.abs(got - _encode(dense_norm_model)).max() <= 1e-5


def test_matryoshka_dims_truncate_then_normalise(dense_norm_model, tmp_path):
    result = export_model(dense_norm_model, ExportOptions(out=tmp_path, name="m8", dims=8, max_batch_size=4))
    assert result.parity.passed and result.metadata.dims == 8 and result.config.outputs[0].dims == (8,)
    got = _served_rows(result, TEXTS)
    want = _encode(dense_norm_model, truncate_dim=8, normalize_embeddings=True)
    assert np.abs(got - want).max() <= 1e-5
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # and not the plain prefix of the 16-dim rows, which is not a unit vector
    assert np.abs(got - _encode(dense_norm_model)[:, :8]).max() > 1e-3


def test_dims_beyond_the_width_are_refused(dense_norm_model, tmp_path):
    with pytest.raises(TeiExportError, match=r"--dims 17 is outside the embedding's width \(1\.\.16\)"):
        export_model(dense_norm_model, ExportOptions(out=tmp_path, name="m17", dims=17))
    assert not (tmp_path / "m17").exists()


def test_the_models_own_truncate_dim_is_the_default(dense_norm_model, tmp_path):
    import shutil

    src = tmp_path / "own"
    shutil.copytree(dense_norm_model, src)
    cfg_path = src / "config_sentence_transformers.json"
    cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    cfg_path.write_text(json.dumps({**cfg, "truncate_dim": 4}))
    result = export_model(str(src), ExportOptions(out=tmp_path / "repo", name="own", max_batch_size=4))
    assert result.spec.dims == 4 and result.config.outputs[0].dims == (4,)


def test_a_module_that_cannot_be_exported_is_named(dense_norm_model, tmp_path):
    import shutil

    src = tmp_path / "odd"
    shutil.copytree(dense_norm_model, src)
    modules = json.loads((src / "modules.json").read_text())
    modules.append({"idx": len(modules), "name": "x", "path": "x", "type": "sentence_transformers.models.WordWeights"})
    (src / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(TeiExportError, match="sentence_transformers.models.WordWeights' cannot be exported"):
        export_model(str(src), ExportOptions(out=tmp_path / "repo", name="odd"))
