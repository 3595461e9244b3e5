"""`trace --precision bf16|int8` in process: the int8 layer itself, the quality gate's verdicts, what an export
records, and the options it refuses. Small random models keep it quick; MiniLM's real numbers are in
tests/test_precision_served.py and benchmarks/precision/."""
from __future__ import annotations

import json

import pytest
import torch

from exporter.checks.quality import MIN_TEXTS, QualityReport, neighbour_overlap
from exporter.errors import QualityError, UnsupportedModelError
from exporter.export.pipeline import ExportOptions, export_model
from exporter.export.precision import PrecisionOptions, fast_path_warning, merge_dependence_warning
from exporter.export.quantize import Int8Linear, quantize_int8, smoothing_scales
from model_factory import random_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    return random_model(tmp_path_factory.mktemp("tiny_bert"), "bert", layers=2, hidden=64, heads=2, seed=3)


def _outlier_input(rows: int = 6, features: int = 64, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, features, generator=gen)
    x[:, 3] *= 60.0  # one outlier channel, as these encoders have
    return x


def _linear(seed: int = 0) -> torch.nn.Linear:
    torch.manual_seed(seed)
    return torch.nn.Linear(64, 48)


def test_int8_linear_is_close_to_fp32_and_runs_traced():
    layer = _linear()
    q = Int8Linear(layer)
    x = torch.randn(2, 5, 64)
    with torch.inference_mode():
        exact, got = layer(x), q(x)
    assert got.shape == exact.shape and got.dtype == torch.float32
    assert (got - exact).norm() / exact.norm() < 0.02
    traced = torch.jit.trace(q, (x,))
    assert "aten::_int_mm" in str(traced.graph)
    with torch.inference_mode():
        assert torch.equal(traced(x), got)
        assert traced(torch.randn(3, 7, 64)).shape == (3, 7, 48)  # shapes other than the traced one
    assert q.qweight.dtype == torch.int8 and q.qweight.shape == (48, 64)


def test_a_row_never_depends_on_the_rest_of_the_batch():
    """Per-token scales: a row next to a row 1000x larger gives the very same result as alone. quantize_dynamic's
    per-tensor scale does not (the reason it is not used)."""
    layer = _linear()
    x = torch.randn(1, 64)
    loud = torch.randn(1, 64) * 1000.0
    q = Int8Linear(layer)
    with torch.inference_mode():
        assert torch.equal(q(x)[0], q(torch.cat([x, loud]))[0])
        naive = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(layer), {torch.nn.Linear},
                                                       dtype=torch.qint8)
        assert not torch.allclose(naive(x)[0], naive(torch.cat([x, loud]))[0], atol=1e-3)


def test_smoothing_lowers_the_error_of_an_outlier_channel():
    layer = _linear()
    x = _outlier_input()
    with torch.inference_mode():
        exact = layer(x)
        plain = (Int8Linear(layer)(x) - exact).norm() / exact.norm()
        s = smoothing_scales(x.abs().amax(dim=0), layer.weight, alpha=0.5)
        smoothed = (Int8Linear(layer, s)(x) - exact).norm() / exact.norm()
    assert smoothed < plain


def test_quantize_int8_keeps_named_layers_in_fp32(tiny):
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(tiny).eval()
    model, plan = quantize_int8(encoder, keep_fp32=("encoder.layer.1.*",))
    assert plan.kept_fp32 and all(n.startswith("encoder.layer.1.") for n in plan.kept_fp32)
    kinds = {n: type(m).__name__ for n, m in model.named_modules()}
    assert all(kinds[n] == "Linear" for n in plan.kept_fp32)
    assert all(kinds[n] == "Int8Linear" for n in plan.quantized)
    assert isinstance(encoder.encoder.layer[0].attention.self.query, torch.nn.Linear)  # the original is untouched
    assert plan.embeddings == ["embeddings.word_embeddings"] and kinds[plan.embeddings[0]] == "Int8Embedding"
    assert kinds["embeddings.position_embeddings"] == "Embedding"  # small tables stay fp32
    kept, kept_plan = quantize_int8(encoder, keep_fp32=("embeddings.word_embeddings",))
    assert not kept_plan.embeddings and isinstance(kept.embeddings.word_embeddings, torch.nn.Embedding)


def test_neighbour_overlap_counts_shared_neighbours():
    base = torch.randn(40, 16)
    assert neighbour_overlap(base, base).mean() == 1.0
    shuffled = base[torch.randperm(40)]
    assert neighbour_overlap(base, shuffled).mean() < 0.6


def test_int8_export_records_its_quality(tiny, tmp_path):
    options = ExportOptions(out=tmp_path / "repo", name="t8", precision="int8", max_batch_size=8,
                            precision_options=PrecisionOptions(min_cosine=0.5, min_overlap=0.0))
    result = export_model(tiny, options)
    meta = json.loads((result.target.version_dir / "tei_export.json").read_text())
    quality = meta["parity"]["quality"]
    assert quality["precision"] == "int8" and quality["passed"] and quality["texts"] >= MIN_TEXTS
    assert 0.5 <= quality["min_cosine"] <= quality["mean_cosine"] <= 1.0
    assert quality["row_independence_max_abs_diff"] <= 1e-6
    assert quality["int8"]["quantized"] > 0 and quality["int8"]["smoothing"]
    header = (result.target.model_dir / "config.pbtxt").read_text().splitlines()[1]
    assert header.startswith("# Precision int8 vs fp32") and f"{quality['min_cosine']:.5f}" in header
    # the trace is held to the fp32 bound against its own eager int8 module
    assert result.parity.passed and result.parity.max_abs_diff <= 1e-5
    model = torch.jit.load(str(result.target.version_dir / "model.pt"))
    assert "_int_mm" in str(model.inlined_graph)


def test_int8_short_of_its_gate_writes_nothing_and_names_layers_and_texts(tiny, tmp_path):
    options = ExportOptions(out=tmp_path / "repo", name="t8", precision="int8", max_batch_size=8,
                            precision_options=PrecisionOptions(min_cosine=1.0))
    with pytest.raises(QualityError) as caught:
        export_model(tiny, options)
    assert not (tmp_path / "repo" / "t8").exists()
    report: QualityReport = caught.value.report
    assert not report.passed and report.min_cosine < 1.0
    table = str(caught.value)
    assert "min cosine" in table and "texts furthest from fp32" in table and "encoder.layer." in table
    assert report.layers and report.layers[0]["error"] >= report.layers[-1]["error"] > 0


def test_bf16_export_is_gated_against_fp32(tiny, tmp_path):
    result = export_model(tiny, ExportOptions(out=tmp_path / "repo", name="tb", precision="bf16", max_batch_size=8))
    meta = json.loads((result.target.version_dir / "tei_export.json").read_text())
    assert meta["dtype"] == "bfloat16" and meta["parity"]["quality"]["precision"] == "bf16"
    assert meta["parity"]["quality"]["min_cosine"] >= 0.999


def test_calibration_file_needs_enough_texts(tiny, tmp_path):
    few = tmp_path / "few.txt"
    few.write_text("\n".join(f"text number {i}" for i in range(10)))
    with pytest.raises(UnsupportedModelError, match="at least 1000"):
        export_model(tiny, ExportOptions(out=tmp_path / "repo", precision="int8",
                                         precision_options=PrecisionOptions(calibration=few)))


@pytest.mark.parametrize("kwargs, where", [
    (dict(precision="int8", format="pt2"), "--precision int8"),
    (dict(precision="int8", dtype="bfloat16"), "--precision int8"),
    (dict(precision="bf16", precision_options=PrecisionOptions(fp32_layers=("x",))), "--precision bf16"),
    (dict(precision="int8", precision_options=PrecisionOptions(min_cosine=1.5)), "--min-cosine"),
    (dict(precision="int4"), "--precision"),
])
def test_options_it_refuses(kwargs, where):
    with pytest.raises(UnsupportedModelError) as caught:
        ExportOptions(**kwargs).validate()
    assert caught.value.where == where


def test_merge_dependence_is_warned_where_chunks_are_padded():
    # the measurement behind it is test_precision_served's strict xfail (an int8 graph text row alone vs merged)
    assert "ragged export" in merge_dependence_warning("int8", True, False)
    assert "graph text model" in merge_dependence_warning("bf16", False, True)
    assert merge_dependence_warning("int8", False, False) is None and merge_dependence_warning("fp32", True, True) is None


def test_merge_dependence_is_warned_for_the_text_model_that_was_built(tiny, tmp_path):
    """trace warns of the graph text model's merge dependence only when it builds one: a tokenizer the graph cannot
    reproduce falls back to the Python text models, whose rows come from the padded token model alone (it warned
    from --tokenizer before the tokenizer was read)."""
    import shutil

    nfkc = tmp_path / "nfkc"
    shutil.copytree(tiny, nfkc)
    data = json.loads((nfkc / "tokenizer.json").read_text())
    data["normalizer"] = {"type": "NFKC"}  # not BERT's normaliser: the WordPiece graph refuses it
    (nfkc / "tokenizer.json").write_text(json.dumps(data))
    settings = json.loads((nfkc / "tokenizer_config.json").read_text())
    settings["tokenizer_class"] = "PreTrainedTokenizerFast"  # BertTokenizer would rebuild BERT's normaliser
    (nfkc / "tokenizer_config.json").write_text(json.dumps(settings))
    results = {label: export_model(str(source), ExportOptions(out=tmp_path / label, name="t", precision="bf16",
                                                              max_batch_size=8, with_tokenizer=True))
               for label, source in (("graph", tiny), ("fallback", nfkc))}
    assert (tmp_path / "graph" / "t_text" / "1" / "text_graph.json").exists()
    assert (tmp_path / "fallback" / "t_tokenizer").exists()
    assert any("graph text model" in w for w in results["graph"].warnings), results["graph"].warnings
    assert not any("merged chunk" in w for w in results["fallback"].warnings), results["fallback"].warnings


def test_fast_path_warning_names_the_missing_flags():
    assert fast_path_warning("int8", {"avx2", "fma"}) and "avx512_vnni" in fast_path_warning("int8", {"avx2"})
    assert fast_path_warning("int8", {"avx_vnni"}) is None
    assert fast_path_warning("bf16", {"avx512_bf16"}) is None and fast_path_warning("bf16", {"avx2"})
    assert fast_path_warning("fp32", {"avx2"}) is None


def test_cli_passes_the_precision_options(tiny, tmp_path):
    from click.testing import CliRunner

    from exporter.cli import main

    result = CliRunner().invoke(main, ["trace", tiny, "--out", str(tmp_path / "repo"), "--name", "c8", "--precision",
                                       "int8", "--min-cosine", "0.5", "--min-overlap", "0", "--smooth", "0",
                                       "--fp32-layers", "encoder.layer.1.*", "--max-batch-size", "4", "--json"])
    assert result.exit_code == 0, result.output
    quality = json.loads(result.stdout)["quality"]
    assert quality["bounds"] == {"min_cosine": 0.5, "min_overlap": 0.0}
    assert not quality["int8"]["smoothing"] and all(n.startswith("encoder.layer.1.")
                                                     for n in quality["int8"]["kept_fp32"])
    assert quality["int8"]["kept_fp32"]


def test_fp32_layers_that_match_nothing_are_refused(tiny):
    from transformers import AutoModel

    with pytest.raises(UnsupportedModelError, match="names no Linear") as caught:
        quantize_int8(AutoModel.from_pretrained(tiny).eval(), keep_fp32=("encoder.layers.*",))
    assert caught.value.where == "--fp32-layers" and "encoder.layer.0." in str(caught.value)


def test_ragged_int8_export_is_gated_and_runs_on_packed_texts(tiny, tmp_path):
    from exporter.export.ragged import pack

    options = ExportOptions(out=tmp_path / "repo", name="r8", precision="int8", batching="ragged", max_batch_size=8,
                            ragged_token_budget=256, precision_options=PrecisionOptions(min_cosine=0.5,
                                                                                        min_overlap=0.0))
    result = export_model(tiny, options)
    assert result.parity.passed and result.metadata.parity["quality"]["passed"]
    model = torch.jit.load(str(result.target.version_dir / "model.pt"))
    with torch.inference_mode():
        out = model(*pack([[101, 2023, 102], [101, 7592, 2088, 999, 102]], torch.int64))
    assert out.shape == (2, 64) and torch.isfinite(out).all()
