"""Bad input: each case gets a message naming the problem and the fix, a non-zero exit, and nothing written."""
from __future__ import annotations

import json
import os
import shutil

import pytest
from click.testing import CliRunner
from model_factory import random_model

from exporter.export import pipeline as export_mod
from exporter.cli import main
from exporter.errors import ParityError, TeiExportError
from exporter.export.pipeline import ExportOptions, export_model
from exporter.checks.parity import Tolerance
from exporter.export.repository import STAGING_PREFIX


def _tree(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else None


def _cli_fails(args, *expected_fragments):
    res = CliRunner().invoke(main, args)
    assert res.exit_code != 0, res.output
    for fragment in expected_fragments:
        assert fragment in res.output, res.output
    assert "Traceback" not in res.output
    return res


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return random_model(tmp_path_factory.mktemp("tiny") / "bert", "bert", max_seq_length=32)


def test_unknown_hub_id_offline(tmp_path):
    _cli_fails(["trace", "no-such-org/no-such-model-xyz", "--out", str(tmp_path / "r")],
               "cannot get model 'no-such-org/no-such-model-xyz'", "Fix:")
    assert not (tmp_path / "r").exists()


def test_missing_folder(tmp_path):
    _cli_fails(["trace", str(tmp_path / "nope"), "--out", str(tmp_path / "r")], "model folder not found",
               str(tmp_path / "nope"))
    assert not (tmp_path / "r").exists()


def test_folder_without_weights(tmp_path, tiny):
    src = tmp_path / "noweights"
    shutil.copytree(tiny, src)
    (src / "model.safetensors").unlink()
    _cli_fails(["trace", str(src), "--out", str(tmp_path / "r")], "no weights", "model.safetensors")
    assert not (tmp_path / "r").exists()


def test_architecture_that_cannot_be_exported(tmp_path, tiny):
    src = tmp_path / "gpt2"
    shutil.copytree(tiny, src)
    cfg = json.loads((src / "config.json").read_text())
    cfg["model_type"] = "gpt2"
    (src / "config.json").write_text(json.dumps(cfg))
    _cli_fails(["trace", str(src), "--out", str(tmp_path / "r")], "architecture 'gpt2' is not supported",
               "bert", "config.json")
    assert not (tmp_path / "r").exists()


def test_trace_failure_is_reported(tmp_path, tiny, monkeypatch):
    def broken(*_args, **_kwargs):
        raise RuntimeError("unsupported operation in forward")

    monkeypatch.setattr("torch.jit.trace", broken)
    with pytest.raises(TeiExportError, match="cannot be traced to TorchScript: RuntimeError"):
        export_model(tiny, ExportOptions(out=tmp_path / "r", name="t"))
    assert not (tmp_path / "r" / "t").exists()


def test_unknown_pooling(tmp_path, tiny):
    _cli_fails(["trace", tiny, "--out", str(tmp_path / "r"), "--pooling", "median"], "median")
    with pytest.raises(TeiExportError, match="unknown pooling 'median'.*Fix: use one of: cls"):
        export_model(tiny, ExportOptions(out=tmp_path / "r", pooling="median"))
    assert not (tmp_path / "r").exists()


def test_pooling_required_without_metadata(tmp_path):
    src = random_model(tmp_path / "plain", "bert", st_metadata=False)
    _cli_fails(["trace", src, "--out", str(tmp_path / "r")], "pooling is unknown", "--pooling")
    assert not (tmp_path / "r").exists()
    result = export_model(src, ExportOptions(out=tmp_path / "r", name="plain", pooling="mean", max_batch_size=2))
    assert result.spec.pooling == "mean" and not result.spec.normalize and result.parity.passed


def test_max_seq_len_above_positions(tmp_path, tiny):
    _cli_fails(["trace", tiny, "--out", str(tmp_path / "r"), "--max-seq-len", "4096"],
               "--max-seq-len 4096 is outside", "1..130", "--max-seq-len 130 or less")
    assert not (tmp_path / "r").exists()


def test_output_folder_not_writable(tmp_path, tiny):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    _cli_fails(["trace", tiny, "--out", str(blocker / "repo")], "not writable")
    if os.geteuid() != 0:  # root ignores permission bits; the file-in-the-way case above covers root
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        _cli_fails(["trace", tiny, "--out", str(ro)], "not writable")


def test_existing_version_needs_force(tmp_path, tiny):
    repo = tmp_path / "r"
    export_model(tiny, ExportOptions(out=repo, name="m", max_batch_size=2))
    model_pt = repo / "m" / "1" / "model.pt"
    before = model_pt.read_bytes()
    stat = model_pt.stat()
    _cli_fails(["trace", tiny, "--out", str(repo), "--name", "m"], "version 1 of model 'm' already exists",
               "--force", "--version 2")
    assert model_pt.stat().st_mtime_ns == stat.st_mtime_ns and model_pt.read_bytes() == before

    # --version 2 adds a version and leaves version 1 alone
    export_model(tiny, ExportOptions(out=repo, name="m", version=2, max_batch_size=2))
    assert (repo / "m" / "2" / "model.pt").is_file()
    assert model_pt.stat().st_mtime_ns == stat.st_mtime_ns

    # --force replaces version 1 in place
    res = CliRunner().invoke(main, ["trace", tiny, "--out", str(repo), "--name", "m", "--force",
                                    "--max-batch-size", "2"])
    assert res.exit_code == 0, res.output
    assert model_pt.stat().st_mtime_ns != stat.st_mtime_ns
    assert not [p for p in repo.iterdir() if p.name.startswith(STAGING_PREFIX)]


@pytest.mark.parametrize("name", ["../evil", "a/b", "..", ".hidden", "with space"])
def test_invalid_model_name(tmp_path, tiny, name):
    _cli_fails(["trace", tiny, "--out", str(tmp_path / "r"), "--name", name], f"invalid model name '{name}'")
    assert _tree(tmp_path / "r") is None
    assert not (tmp_path / "evil").exists()


def test_failed_parity_writes_nothing(tmp_path, tiny, monkeypatch):
    # An impossible bound makes the (real) comparison fail, exercising the abort path.
    monkeypatch.setattr(export_mod, "tolerance_for", lambda *_args: Tolerance(max_abs=-1.0, min_cosine=2.0))
    repo = tmp_path / "r"
    with pytest.raises(ParityError) as info:
        export_model(tiny, ExportOptions(out=repo, name="m", max_batch_size=2))
    assert "nothing was written" in str(info.value) and "FAIL" in str(info.value)
    assert not info.value.report.passed and len(info.value.report.cases) >= 5
    assert _tree(repo) in (None, [])


def test_failed_text_model_check_writes_nothing(tmp_path, tiny, monkeypatch):
    """The graph text model is built and checked before the token model is written: when its (real) comparison
    fails, the repository holds neither."""
    import exporter.export.precision as precision  # the text model's check reads its bound from here

    monkeypatch.setattr(precision, "served_tolerance", lambda _meta: Tolerance(max_abs=-1.0, min_cosine=2.0))
    repo = tmp_path / "r"
    with pytest.raises(ParityError, match="graph text model differs"):
        export_model(tiny, ExportOptions(out=repo, name="m", max_batch_size=2, with_tokenizer=True,
                                         tokenizer="graph"))
    assert _tree(repo) in (None, [])


def test_float16_on_cpu_is_refused(tmp_path, tiny):
    # The fix offered is one that works on CPU: float32 (bfloat16 is refused there when it misses its parity bound).
    _cli_fails(["trace", tiny, "--out", str(tmp_path / "r"), "--dtype", "float16"], "float16", "--device cuda",
               "--dtype float32 on CPU")


def test_cuda_without_gpu_is_refused(tmp_path, tiny):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device; the refusal path is for machines without one")
    _cli_fails(["trace", tiny, "--out", str(tmp_path / "r"), "--device", "cuda"], "no CUDA device", "--device cpu")
