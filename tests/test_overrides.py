"""An export's own overrides (pooling, normalize, max length) are what every later check compares against.

The C++ LibTorch check once built its reference from the model's files and ignored the export's overrides: an
export with ``--pooling cls`` of a mean-pooling model passed trace, then failed ``check-libtorch`` (min cos 0.32).
"""
from __future__ import annotations

import numpy as np
import pytest

from exporter.export.pipeline import ExportOptions, export_model


@pytest.fixture(scope="module")
def overridden(tmp_path_factory, minilm):
    """MiniLM (mean pooling, normalised) exported with CLS pooling, no normalisation and a shorter max length."""
    repo = tmp_path_factory.mktemp("repo_overrides")
    export_model(minilm, ExportOptions(out=repo, name="cls_raw", pooling="cls", normalize=False, max_seq_len=40,
                                       max_batch_size=4))
    return repo


def test_libtorch_check_uses_the_exports_overrides(overridden):
    from exporter.checks.libtorch_check import check_libtorch

    report = check_libtorch(overridden / "cls_raw")
    assert report.ok, report.summary()
    assert report.max_abs_diff <= 1e-5 and report.min_cosine >= 0.99999


def test_reference_is_sentence_transformers_with_the_same_overrides(overridden, minilm):
    """The reader's reference equals sentence-transformers built by hand with CLS pooling, no Normalize, 40 tokens."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules.pooling import Pooling

    from exporter.export.reader import read_exported

    texts = ["a short one", "a much longer sentence " * 20]
    exported = read_exported(overridden / "cls_raw")
    got = exported.reference().encode(texts)
    st = SentenceTransformer(minilm, device="cpu")
    by_hand = SentenceTransformer(modules=[st[0], Pooling(384, pooling_mode="cls")], device="cpu")
    by_hand.max_seq_length = 40
    want = by_hand.encode(texts, convert_to_numpy=True)
    assert np.abs(got - want).max() <= 1e-6
    assert abs(float(np.linalg.norm(got[0])) - 1.0) > 1e-3  # not normalised
