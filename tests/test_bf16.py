"""bf16 export on CPU, for real: all-MiniLM-L6-v2 in bfloat16, FP32 out, parity against fp32 eager.

Finding (recorded here, not hidden): with every encoder weight in bf16 the export misses the issue's bound
(min cosine >= 0.9999 per row) on MiniLM: 0.99974 on the random-token left-padding shape case, and 0.99988 on
the real verify corpus (256 docstring sentences + edge cases). `tei-export trace <MiniLM> --dtype bfloat16` therefore
refuses the export and writes nothing (re-run on an AMD EPYC with avx512_bf16: left padding 0.99974, max batch
0.99989, max length 0.99986). `test_bf16_export_meets_bound` is a strict xfail until the recipe or the bound is
decided; it turns into a failure (XPASS) the day the export meets the bound, and the README must then change too.
"""
from __future__ import annotations

import json

import pytest
import torch

from exporter.errors import ParityError
from exporter.export.pipeline import ExportOptions, cpu_bf16_warning, export_model
from exporter.checks.parity import tolerance_for


def _export(minilm, out, progress=None):
    return export_model(minilm, ExportOptions(out=out, name="minilm_bf16", dtype="bfloat16", max_batch_size=16),
                        progress=progress)


@pytest.mark.xfail(strict=True, raises=ParityError,
                   reason="bf16 MiniLM min cosine 0.99974 (random tokens, left padding) < 0.9999: see module doc")
def test_bf16_export_meets_bound(tmp_path, minilm):
    # only the verdict: what a bf16 export writes is checked on one that meets the bound (below), since this
    # export raises before anything after it could run
    result = _export(minilm, tmp_path / "repo")
    assert result.parity.passed and result.parity.min_cosine >= 0.9999


def test_a_bf16_export_that_meets_the_bound(options_repo, tiny_models):
    """A small random BERT meets the bf16 bound (trace --dtype bfloat16 in tests/conftest.py's OPTION_EXPORTS): its
    inputs stay INT64 and its output FP32 (the LibTorch backend has no BF16 type), and model.pt's rows are within the
    README's bf16 bound (cosine >= 0.9999 per row) of fp32 sentence-transformers. Served: test_options_served.py."""
    import _triton_fixtures as fx

    version_dir = options_repo / "bf16" / "1"
    from tritonclient.grpc.model_config_pb2 import DataType

    from exporter.export.triton_config import parse_pbtxt

    text = (options_repo / "bf16" / "config.pbtxt").read_text()
    config = parse_pbtxt(text)
    assert [DataType.Name(i.data_type) for i in config.input] == ["TYPE_INT64"] * 3
    assert [DataType.Name(o.data_type) for o in config.output] == ["TYPE_FP32"] and "BF16" not in text
    assert json.loads((version_dir / "tei_export.json").read_text())["dtype"] == "bfloat16"
    st = fx.load_sentence_transformer(tiny_models["bert"])
    texts = ["bf16 on a CPU", "a", "a longer sentence, so that the batch has padding in it"]
    batch = fx.tokenize(st, texts)
    model = torch.jit.load(str(version_dir / "model.pt"))
    with torch.inference_mode():
        out = model(*(torch.from_numpy(batch[n]) for n in ("input_ids", "attention_mask", "token_type_ids")))
    assert out.dtype == torch.float32 and out.shape == (3, 32)
    assert any(p.dtype == torch.bfloat16 for p in model.parameters())  # the weights are bf16 indeed
    expected = torch.from_numpy(st.encode(texts, convert_to_numpy=True)).double()
    assert torch.nn.functional.cosine_similarity(out.double(), expected).min() >= 0.9999
    assert not torch.equal(out.double(), expected)  # bf16 is not bit-equal to fp32


def test_bf16_parity_is_measured_and_reported(tmp_path, minilm):
    """Whatever the verdict, the bf16 figures are real: FP32 out, close to fp32 eager, max|diff| reported, and a
    failed export writes nothing."""
    lines: list[str] = []
    try:
        report = _export(minilm, tmp_path / "repo", lines.append).parity
    except ParityError as err:
        report = err.report
        assert not (tmp_path / "repo" / "minilm_bf16" / "1").exists()
    assert report.tolerance == tolerance_for("bfloat16")
    assert report.tolerance.max_abs is None and report.tolerance.min_cosine == 0.9999
    assert 0.999 <= report.min_cosine <= 1.0
    assert 0.0 < report.max_abs_diff < 0.05  # bf16 is not bit-equal to fp32, and not far from it
    assert "max|diff|" in report.table()
    print(f"\nbf16 MiniLM: min cosine {report.min_cosine:.6f}, max|diff| {report.max_abs_diff:.2e}\n{report.table()}")


def test_bf16_warning_follows_cpuinfo(tmp_path):
    without = tmp_path / "cpuinfo_plain"
    without.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n")
    with_bf16 = tmp_path / "cpuinfo_bf16"
    with_bf16.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n")
    with_amx = tmp_path / "cpuinfo_amx"
    with_amx.write_text("flags\t\t: fpu amx_bf16 amx_tile\n")
    assert "avx512_bf16" in cpu_bf16_warning("cpu", without)
    assert cpu_bf16_warning("cpu", with_bf16) is None
    assert cpu_bf16_warning("cpu", with_amx) is None
    assert cpu_bf16_warning("cuda", without) is None
    assert cpu_bf16_warning("cpu", tmp_path / "missing") is None


def test_bf16_warning_reaches_progress_and_never_fails(tmp_path, minilm, monkeypatch):
    """On a CPU without bf16 the export goes on (no error from the warning) and says so through progress."""
    import exporter.export.pipeline as export_mod

    monkeypatch.setattr(export_mod, "cpu_bf16_warning", lambda device="cpu": "no native bf16 (test)")
    lines: list[str] = []
    try:
        result = _export(minilm, tmp_path / "repo", lines.append)
        assert result.warnings == ["no native bf16 (test)"]
        assert result.to_dict()["warnings"] == result.warnings
    except ParityError:
        pass  # the parity verdict is the other tests' business; the warning came first
    assert "warning: no native bf16 (test)" in lines
    assert any("tracing" in line for line in lines)  # the export went on after warning


def test_fp32_export_has_no_bf16_warning(minilm_export):
    assert minilm_export.warnings == []
