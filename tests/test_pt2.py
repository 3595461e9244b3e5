"""--format pt2: torch.export + AOTInductor model.pt2 for Triton's torch_aoti platform, checked in-process, in a real
tritonserver (the bundled 2.51, which needs the package presented as backend "pytorch"), and on bad input."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import _triton_fixtures as fx
from conftest import no_fallback_under_ci
from exporter.cli import main
from exporter.errors import UnsupportedModelError
from exporter.export.pipeline import ExportOptions, export_model
from exporter.export.pt2 import PT2_FILENAME, load_pt2
from exporter.triton.backends import COMPAT_BACKEND_NAME
from exporter.triton.repository_view import legacy_config_text, present_repository
from exporter.triton.server import TritonServer
from exporter.triton_client import TritonClient
from exporter.tokens import encode_batch, feature_names, load_tokenizer
from exporter.export.triton_config import read_config
from exporter.checks.verify import verify_repository

TEXTS = ["Ahead-of-time compiled embeddings.", "A", "A longer sentence, so that this batch needs some padding."]


def test_config_as_torch_aoti_wants_it(minilm_pt2_export):
    result = minilm_pt2_export
    cfg = read_config(result.target.model_dir / "config.pbtxt")
    assert (cfg.platform, cfg.backend, cfg.default_model_filename) == ("torch_aoti", "pytorch", "model.pt2")
    # the pt2 backend cannot split merged requests back: no batching by Triton, the batch is in dims
    assert cfg.max_batch_size == 0 and not cfg.HasField("dynamic_batching")
    assert [(t.name, list(t.dims)) for t in cfg.input] == [("INPUT__0", [-1, -1]), ("INPUT__1", [-1, -1]),
                                                          ("INPUT__2", [-1, -1])]
    assert all(t.data_type == cfg.input[0].data_type for t in cfg.input)
    assert [(o.name, list(o.dims)) for o in cfg.output] == [("OUTPUT__0", [-1, 384])]
    assert [list(v.dims) for v in cfg.model_warmup[0].inputs.values()] == [[1, 16]] * 3
    assert cfg.parameters["INTRA_OP_THREAD_COUNT"].string_value.isdigit()
    files = sorted(p.name for p in result.target.version_dir.iterdir())
    assert files == ["model.pt2", "tei_export.json", "tokenizer"]
    meta = result.metadata
    assert meta.format == "pt2" and meta.input_names == ["input_ids", "attention_mask", "token_type_ids"]
    assert meta.output_names == ["OUTPUT__0"]


def test_export_checked_the_same_grid_as_torchscript(minilm_pt2_export):
    report = minilm_pt2_export.parity
    assert report.passed and report.max_abs_diff <= 1e-5 and report.min_cosine >= 0.99999
    names = {c.name: c for c in report.cases}
    assert {"one token", "left padding", "max batch", "max length", "position limit",
            "encode() on sentences"} <= set(names)
    assert names["position limit"].seq_len == 512 and names["max batch"].batch == 16


def test_saved_package_equals_encode(minilm_pt2_export, st_model):
    """The file on disk, loaded afresh, against SentenceTransformer.encode on a ragged batch."""
    version_dir = minilm_pt2_export.target.version_dir
    model = load_pt2(version_dir / PT2_FILENAME)
    tokenizer = load_tokenizer(version_dir)
    names = ["INPUT__0", "INPUT__1", "INPUT__2"]
    arrays = encode_batch(tokenizer, TEXTS, 256, names, model_inputs=minilm_pt2_export.metadata.input_names)
    got = model(*(torch.from_numpy(arrays[n]) for n in names)).numpy()
    want = st_model.encode(TEXTS, convert_to_numpy=True)
    assert got.shape == want.shape == (3, 384)
    assert np.abs(got - want).max() <= 1e-5


def test_feature_names_map_ordinals_to_the_models_inputs():
    own = ["input_ids", "attention_mask", "token_type_ids"]
    assert feature_names(["INPUT__2", "INPUT__0", "INPUT__1"], own) == ["token_type_ids", "input_ids",
                                                                        "attention_mask"]
    assert feature_names(own, own) == own
    with pytest.raises(ValueError, match="INPUT__3.*3 inputs"):
        feature_names(["INPUT__3"], own)


def test_legacy_view_of_a_torch_aoti_config(minilm_pt2_export, minilm_export):
    text = legacy_config_text(minilm_pt2_export.target.model_dir / "config.pbtxt", COMPAT_BACKEND_NAME)
    from exporter.export.triton_config import parse_pbtxt

    cfg = parse_pbtxt(text)
    assert (cfg.platform, cfg.backend, cfg.default_model_filename) == ("", COMPAT_BACKEND_NAME, "model.pt2")
    assert [t.name for t in cfg.input] == ["INPUT__0", "INPUT__1", "INPUT__2"] and cfg.max_batch_size == 0
    # no view for a server that ships its own backend folder (it gets the repository as exported)
    repo = minilm_pt2_export.target.repo
    assert present_repository(repo, aoti_backend=None).root == repo.absolute()
    # a TorchScript-only repository needs no view either
    view = present_repository(minilm_export.target.repo, aoti_backend=COMPAT_BACKEND_NAME)
    assert not view.presented and not view.temporary


def test_served_by_the_bundled_tritonserver(binary, minilm_pt2_export, minilm_export, st_model, tmp_path):
    """Both formats side by side in one repository, over HTTP and gRPC, compared with eager sentence-transformers."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for result in (minilm_pt2_export, minilm_export):
        shutil.copytree(result.target.model_dir, repo / result.target.name)
    exported_config = (repo / "minilm_pt2" / "config.pbtxt").read_text()
    with TritonServer(repo, binary=binary, cache_dir=tmp_path / "cache", log_path=tmp_path / "triton.log") as srv:
        view = srv.view.root
        assert srv.view.presented == ("minilm_pt2",) and view != repo
        assert read_config(view / "minilm_pt2" / "config.pbtxt").backend == COMPAT_BACKEND_NAME
        assert set(srv.models) == {"minilm", "minilm_pt2"}
        # torch_aoti goes to the compatibility backend whichever backend serves TorchScript (NVIDIA's, when built)
        no_fallback_under_ci(srv.compat_backend)
        assert srv.served_by("minilm_pt2").startswith("compatibility backend")
        assert srv.served_by("minilm") == ("compatibility backend (model.py)" if srv.compat_backend
                                           else srv.backends.nvidia_label)
        reports = [verify_repository(repo, url=url, protocols=(protocol,), libtorch=False, corpus_size=12)
                   for protocol, url in (("http", srv.http_url), ("grpc", srv.grpc_url))]
        # a batch of 16 in one request, as a client sends it: Triton's own statistics count one request and one
        # execution for it (no batching by Triton), and its 16 rows are encode()'s
        texts = [f"{TEXTS[k % 3]} ({k})" for k in range(16)]
        batch = fx.tokenize(st_model, texts)
        with TritonClient(srv.http_url, "http") as client:
            before = client.statistics("minilm_pt2")
            inputs = {f"INPUT__{k}": batch[n] for k, n in enumerate(("input_ids", "attention_mask", "token_type_ids"))}
            rows = client.infer("minilm_pt2", inputs, ["OUTPUT__0"])["OUTPUT__0"]
            after = client.statistics("minilm_pt2", at_least=before[0] + 1)
        log = srv.log_text()
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1)
    expected = st_model.encode(texts, convert_to_numpy=True)
    assert rows.shape == (16, 384) and np.abs(rows - expected).max() <= 1e-5
    for report in reports:
        assert report.passed, report.table()
        pt2 = next(c for c in report.checks if c.model == "minilm_pt2")
        assert not pt2.batching and pt2.max_abs_diff <= 1e-5 and pt2.min_cosine >= 0.99999
        assert pt2.inferences == pt2.executions > 0
    assert f"presented to this server as backend \"{COMPAT_BACKEND_NAME}\"" in log and "PT2_ORDINAL" in log
    assert not view.exists(), "the view is removed with the server"
    assert (repo / "minilm_pt2" / "config.pbtxt").read_text() == exported_config


def test_wrong_names_and_counts_fail_to_load(binary, minilm_pt2_export, tmp_path):
    repo = tmp_path / "bad"
    repo.mkdir()
    source = minilm_pt2_export.target.model_dir
    for name, edit in (("renamed", lambda t: t.replace('"INPUT__0"', '"input_ids"')),
                       ("too_few", lambda t: t[:t.index('  {\n    name: "INPUT__2"')].rstrip().rstrip(",") + "\n"
                        + t[t.index("]\noutput"):])):
        (repo / name).mkdir()
        (repo / name / "1").symlink_to(source / "1", target_is_directory=True)
        text = (source / "config.pbtxt").read_text().replace('name: "minilm_pt2"', f'name: "{name}"')
        text = text[:text.index("model_warmup")]  # warm-up would fail first on the edited inputs
        (repo / name / "config.pbtxt").write_text(edit(text))
    _, text = fx.start_must_fail(repo, binary, cache_dir=tmp_path / "cache", startup_timeout=120)
    assert "'renamed'" in text and "named INPUT__<n>" in text
    assert "'too_few'" in text and "configuration expects 2 inputs, the model.pt2 package takes 3" in text


def test_pt2_with_tokenizer_is_refused_before_any_work(tmp_path, minilm):
    with pytest.raises(UnsupportedModelError, match="max_batch_size 0") as err:
        export_model(minilm, ExportOptions(out=tmp_path / "r", name="m", format="pt2", with_tokenizer=True))
    assert "--format torchscript" in str(err.value)
    assert not (tmp_path / "r").exists()


def test_unknown_format_and_gpu_kind_mismatch_exit_nonzero(tmp_path, minilm):
    res = CliRunner().invoke(main, ["trace", minilm, "--out", str(tmp_path / "r"), "--format", "onnx"])
    assert res.exit_code == 2 and "'onnx' is not one of 'torchscript', 'pt2'" in res.output
    res = CliRunner().invoke(main, ["trace", minilm, "--out", str(tmp_path / "r"), "--device", "cuda",
                                    "--kind", "cpu"])
    assert res.exit_code == 1 and "KIND_CPU" in res.output and "--kind gpu" in res.output
    assert not (tmp_path / "r").exists()


def test_bench_and_tune_refuse_a_pt2_model_clearly(minilm_pt2_export):
    from exporter.bench import BenchOptions, run_bench
    from exporter.errors import TeiExportError
    from exporter.tune import TuneOptions, run_tune

    repo, name = minilm_pt2_export.target.repo, minilm_pt2_export.target.name
    with pytest.raises(TeiExportError, match="float32 TorchScript export, and minilm_pt2 is float32 pt2"):
        run_bench(BenchOptions.quick_options(repo, name))
    with pytest.raises(TeiExportError, match="no queue delay to tune"):
        run_tune(TuneOptions(repo, name))


def test_view_leaves_unparseable_configs_to_triton(minilm_pt2_export, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(minilm_pt2_export.target.model_dir, repo / "aoti", symlinks=True)
    (repo / "garbage").mkdir()
    (repo / "garbage" / "config.pbtxt").write_text("max_batch_size: oops\n")
    view = present_repository(repo, aoti_backend=COMPAT_BACKEND_NAME)
    try:
        assert view.presented == ("aoti",)
        assert (view.root / "garbage").resolve() == (repo / "garbage").resolve()  # linked as it is
    finally:
        view.remove()
    assert not view.root.exists()
