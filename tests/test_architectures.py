"""Every registered architecture, exported from a small random model of its tiny configuration and served.

The registry (exporter/export/architectures.py) holds each family's facts and a tiny test configuration; this file
exports every entry, padded and ragged, from a sentence-transformers folder that tests/family_models.py builds with a
tokenizer of the family's kind and the modules its real checkpoints carry (Dense, prompts, left padding for the
decoder), and checks it against sentence-transformers itself. A registered family without a test fails here.
"""
from __future__ import annotations

import numpy as np
import pytest

from family_models import MAX_SEQ_LEN, POSITIONS, RECIPES, family_model

from exporter.export.architectures import registered
from exporter.export.pipeline import ExportOptions, export_model

FAMILIES = [a.model_type for a in registered()]
# Families this file exports; the rest (the 2019-2021 encoders) are exported by tests/test_trace.py as well.
NEW_FAMILIES = ("modernbert", "qwen3", "gemma3_text", "embedding_gemma2_text", "gte", "nomic_bert", "eurobert",
                "jina_embeddings_v3", "deberta-v2")


def test_every_registered_family_has_a_tiny_config_and_a_test():
    for arch in registered():
        assert arch.tiny, f"{arch.model_type} has no tiny test configuration"
    assert set(NEW_FAMILIES) <= set(FAMILIES)


@pytest.fixture(scope="module")
def family_sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {family: family_model(root / family, family) for family in FAMILIES}


# A sampled matrix of the options that change the graph, spread over the families and both variants so that one
# repository and one server cover them (the combinations refused are asserted in tests/test_ragged.py and
# tests/test_bad_input.py): {family: ({padded options}, {ragged options})}.
OPTIONS = {
    "bert": ({"int32": True}, {"dims": 16}),
    "qwen3": ({}, {"int32": True}),
    "gemma3_text": ({"dims": 16}, {}),
    "modernbert": ({"token_embeddings": True}, {"normalize": False}),
    "gte": ({"pooling": "mean"}, {"int32": True}),
    "nomic_bert": ({"max_seq_len": 64}, {"pooling": "cls", "normalize": True}),
    "deberta-v2": ({"pooling": "cls"}, {"max_seq_len": 48}),
    "eurobert": ({"pooling": "max"}, {"dims": 8}),
    "embedding_gemma2_text": ({"max_seq_len": 64}, {}),
}


@pytest.fixture(scope="module")
def family_repo(tmp_path_factory, family_sources):
    """Every family exported padded and ragged into one repository (served once by the tests below)."""
    repo = tmp_path_factory.mktemp("repo_families")
    results = {}
    for family, src in family_sources.items():
        for batching, extra in zip(("padded", "ragged"), OPTIONS.get(family, ({}, {}))):
            name = f"{family.replace('-', '_')}_{batching}"
            results[name] = export_model(src, ExportOptions(out=repo, name=name, batching=batching, max_batch_size=8,
                                                            **extra))
    return repo, results


@pytest.mark.parametrize("family", FAMILIES)
def test_family_exports_with_parity(family, family_repo):
    repo, results = family_repo
    for batching in ("padded", "ragged"):
        result = results[f"{family.replace('-', '_')}_{batching}"]
        assert result.parity.passed, result.parity.table()
        assert result.metadata.variant == batching and result.metadata.model_type == family
        # the grid went past the trace length and max_seq_len, up to every position the model addresses
        extra = OPTIONS.get(family, ({}, {}))[batching == "ragged"]
        assert result.spec.max_seq_len == extra.get("max_seq_len", MAX_SEQ_LEN)
        assert all(getattr(result.spec, k) == v for k, v in extra.items() if k in ("pooling", "normalize", "dims"))
        assert result.spec.max_positions == POSITIONS - result.spec.architecture.position_offset
        assert any(c.seq_len == result.spec.max_positions for c in result.parity.cases), result.parity.table()


def test_families_keep_their_modules(family_repo):
    """Dense layers, prompts, lasttoken pooling and left padding come through as the checkpoint says."""
    _, results = family_repo
    gemma = results["gemma3_text_ragged"]
    assert [m["kind"] for m in gemma.metadata.modules] == ["Pooling", "Dense", "Dense", "Normalize"]
    assert gemma.config.outputs[0].dims == (24,) and gemma.spec.embedding_width == 24
    truncated = results["gemma3_text_padded"]  # --dims 16 after the Dense layers, normalised again
    assert [m["kind"] for m in truncated.metadata.modules] == ["Pooling", "Dense", "Dense", "Normalize", "Truncate",
                                                               "Normalize"]
    assert truncated.config.outputs[0].dims == (16,)
    # EmbeddingGemma 2 projects to embedding_dim inside the model: that, not hidden_size, is the embedding width
    assert results["embedding_gemma2_text_ragged"].config.outputs[0].dims == (24,)
    qwen = results["qwen3_ragged"]
    assert qwen.spec.pooling == "lasttoken" and qwen.spec.architecture.causal
    assert qwen.metadata.prompts == RECIPES["qwen3"].prompts
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(str(results["qwen3_padded"].target.version_dir / "tokenizer")).padding_side \
        == "left"


def test_families_served_on_nvidias_backend(nvidia_backend, family_repo):
    """Every family, padded and ragged, served by NVIDIA's libtriton_pytorch.so and verified over HTTP and gRPC
    against sentence-transformers, with the C++ LibTorch check on."""
    from exporter.checks.verify import verify_repository

    repo, results = family_repo
    report = verify_repository(repo, corpus_size=12, libtorch=True, server_options={"backend": "nvidia"})
    assert report.passed, report.table()
    assert {c.model for c in report.checks} == set(results)
    assert {c.protocol for c in report.checks} == {"http", "grpc"}
    for check in report.checks:
        assert "libtriton_pytorch.so" in check.served_by, (check.model, check.served_by)
        assert check.max_abs_diff <= 1e-5 and check.min_cosine >= 0.99999
    padded_cpp = [r for r in report.libtorch if not r.get("skipped")]
    assert len(padded_cpp) >= len(FAMILIES) and all(r["ok"] for r in padded_cpp)


def test_left_padded_decoder_pools_the_last_real_token(family_sources):
    """Qwen3's tokenizer pads on the left: a padded batch gives each text the row it gets alone."""
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(family_sources["qwen3"], device="cpu")
    texts = ["short", "a much longer text than the first one, with more tokens in it"]
    together = st.encode(texts, batch_size=2)
    alone = np.stack([st.encode([t])[0] for t in texts])
    assert st.tokenizer.padding_side == "left"
    assert np.abs(together - alone).max() <= 1e-5


@pytest.mark.parametrize("family", ["modernbert", "qwen3"])
def test_long_context_at_8192_positions(family, tmp_path):
    """ModernBERT's 8,192 positions (global/local attention) and a rotary decoder at the same length: the grid runs
    the trace at max_seq_len = 8,192, far beyond the traced length, so a position table or rotary cache frozen at
    trace time fails here. A tiny model keeps a full 8,192-token case fast on a CPU."""
    src = family_model(tmp_path / family, family, positions=8192, max_seq_len=8192)
    result = export_model(src, ExportOptions(out=tmp_path / "repo", name=family, max_batch_size=2))
    assert result.parity.passed, result.parity.table()
    assert result.spec.max_seq_len == 8192
    assert max(c.seq_len for c in result.parity.cases) == 8192


@pytest.mark.parametrize("family", ["modernbert", "qwen3"])
def test_pt2_export_of_new_families(family, family_sources, tmp_path):
    """torch.export + AOTInductor handles the new families too (every registered one was tried; see the README)."""
    result = export_model(family_sources[family], ExportOptions(out=tmp_path, name=family, format="pt2",
                                                                max_batch_size=4))
    assert result.parity.passed, result.parity.table()
    assert result.metadata.variant == "pt2" and (result.target.version_dir / "model.pt2").is_file()
