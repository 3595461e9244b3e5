"""tei-export trace: real MiniLM weights, the bge-small shape, each supported architecture, and the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from model_factory import random_model

from exporter import __version__
from exporter.cli import main
from exporter.export.pipeline import ExportOptions, export_model
from exporter.export.metadata import ExportMetadata
from exporter.export.spec import source_label
from exporter.export.triton_config import read_config

SENTENCES = ["Triton serves TorchScript models.", "A short one.",
             "Embeddings map text to vectors so that similar meanings end up close together in the space."]


def _encode(source: str, texts, normalize: bool) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(source, device="cpu").encode(texts, normalize_embeddings=normalize,
                                                              convert_to_numpy=True)


def _run_saved(version_dir, source, texts, input_names, dtype=torch.int64):
    """Load the written model.pt afresh and run it on the reference tokenizer's tokens."""
    from transformers import AutoTokenizer

    module = torch.jit.load(str(version_dir / "model.pt"))
    tok = AutoTokenizer.from_pretrained(str(version_dir / "tokenizer"))
    features = tok(texts, padding=True, truncation=True, return_tensors="pt")
    with torch.inference_mode():
        return module(*(features[n].to(dtype) for n in input_names))


def test_minilm_export_matches_sentence_transformers(minilm_export, minilm):
    result = minilm_export
    vdir = result.target.version_dir
    assert (vdir / "model.pt").is_file() and (vdir / "tokenizer" / "tokenizer.json").is_file()
    assert result.parity.passed and result.parity.max_abs_diff <= 1e-5 and result.parity.min_cosine >= 0.99999
    case_names = {c.name for c in result.parity.cases}
    assert {"one token", "left padding", "max batch", "max length", "position limit"} <= case_names
    assert max(c.seq_len for c in result.parity.cases) == 512

    out = _run_saved(vdir, minilm, SENTENCES, ("input_ids", "attention_mask", "token_type_ids"))
    expected = _encode(minilm, SENTENCES, normalize=True)
    assert isinstance(out, torch.Tensor) and out.shape == (3, 384)
    assert np.abs(out.numpy() - expected).max() <= 1e-5
    assert np.allclose(np.linalg.norm(out.numpy(), axis=1), 1.0, atol=1e-5)


def test_traced_forward_keeps_input_names(minilm_export):
    module = torch.jit.load(str(minilm_export.target.version_dir / "model.pt"))
    args = [a.name for a in module.forward.schema.arguments][1:]
    assert args == ["input_ids", "attention_mask", "token_type_ids"]


def test_rendered_config_values(minilm_export):
    cfg = read_config(minilm_export.target.model_dir / "config.pbtxt")
    from tritonclient.grpc import model_config_pb2 as pb

    assert cfg.name == "minilm" and cfg.platform == "pytorch_libtorch" and cfg.max_batch_size == 16
    assert [(i.name, i.data_type, list(i.dims)) for i in cfg.input] == [
        ("input_ids", pb.TYPE_INT64, [-1]), ("attention_mask", pb.TYPE_INT64, [-1]),
        ("token_type_ids", pb.TYPE_INT64, [-1])]
    assert [(o.name, o.data_type, list(o.dims)) for o in cfg.output] == [("embedding", pb.TYPE_FP32, [384])]
    assert len(cfg.instance_group) == 1 and cfg.instance_group[0].count == 1
    assert cfg.instance_group[0].kind == pb.ModelInstanceGroup.KIND_CPU
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 100
    params = {k: v.string_value for k, v in cfg.parameters.items()}
    # no INTER_OP_THREAD_COUNT unless asked: two models that set it abort NVIDIA's backend before 25.11
    assert set(params) == {"INTRA_OP_THREAD_COUNT", "INFERENCE_MODE", "DISABLE_OPTIMIZED_EXECUTION"}
    assert params["INFERENCE_MODE"] == "true" and params["DISABLE_OPTIMIZED_EXECUTION"] == "false"
    assert int(params["INTRA_OP_THREAD_COUNT"]) >= 1
    warm = cfg.model_warmup[0]
    assert warm.batch_size == 1 and set(warm.inputs) == {"input_ids", "attention_mask", "token_type_ids"}
    assert all(v.zero_data and list(v.dims) == [16] for v in warm.inputs.values())


def test_metadata_records_semantics(minilm_export, minilm):
    meta = ExportMetadata.read(minilm_export.target.version_dir)
    assert (meta.source, meta.pooling, meta.normalize, meta.max_seq_len) == (minilm, "mean", True, 256)
    assert meta.input_names == ["input_ids", "attention_mask", "token_type_ids"] and meta.input_dtype == "int64"
    assert meta.output_names == ["embedding"] and meta.versions["torch"].startswith("2.")
    assert meta.parity["passed"] is True


def test_config_header_names_the_source_not_its_local_path(tmp_path):
    # Repositories are uploaded and shared: their config.pbtxt files may name the source folder, never the path
    # to it (a home folder, a user name). tei_export.json keeps the full provenance.
    src = random_model(tmp_path / "home" / "alice" / "models" / "tiny-bert", "bert", max_seq_length=32)
    result = export_model(src, ExportOptions(out=tmp_path / "repo", name="tiny", max_batch_size=4,
                                             with_tokenizer=True, tokenizer="python"))
    configs = sorted((tmp_path / "repo").glob("*/config.pbtxt"))
    assert [c.parent.name for c in configs] == ["tiny", "tiny_text", "tiny_tokenizer"]
    for config in configs:
        text = config.read_text()
        assert "alice" not in text and str(tmp_path) not in text, config
        assert text.splitlines()[0].startswith(f"# Generated by tei-export {__version__} from tiny-bert. "), config
    meta = ExportMetadata.read(result.target.version_dir)
    assert meta.source == src and meta.source_path == str(Path(src).resolve())


def test_source_label_keeps_hub_ids(tmp_path):
    folder = tmp_path / "someone" / "my-model"
    folder.mkdir(parents=True)
    assert source_label("BAAI/bge-small-en-v1.5") == "BAAI/bge-small-en-v1.5"
    assert source_label(str(folder)) == "my-model"
    assert source_label(str(folder) + "/") == "my-model"


def test_bge_small_shape_cls_pooling(tmp_path, bge_like):
    result = export_model(bge_like, ExportOptions(out=tmp_path, name="bge", max_batch_size=8))
    assert result.spec.pooling == "cls" and result.spec.normalize and result.spec.max_seq_len == 512
    assert result.parity.passed, result.parity.table()
    out = _run_saved(result.target.version_dir, bge_like, SENTENCES, result.spec.input_names)
    assert np.abs(out.numpy() - _encode(bge_like, SENTENCES, normalize=True)).max() <= 1e-5


def test_half_precision_checkpoint_exports_float32(tmp_path):
    """A checkpoint stored in float16 (as some on the hub are): the reference and the float32 export compute in
    float32 (transformers alone would load it, and run it, in float16), so the fp32 bound holds."""
    src = random_model(tmp_path / "src", "bert", stored_dtype="float16")
    result = export_model(src, ExportOptions(out=tmp_path / "repo", name="half_stored", max_batch_size=4))
    assert result.parity.passed, result.parity.table()
    out = _run_saved(result.target.version_dir, src, SENTENCES, result.spec.input_names)
    assert out.dtype == torch.float32
    from sentence_transformers import SentenceTransformer

    want = SentenceTransformer(src, device="cpu", model_kwargs={"dtype": torch.float32}).encode(SENTENCES)
    assert np.abs(out.numpy() - want).max() <= 1e-5


@pytest.mark.parametrize("model_type,pooling", [("roberta", "mean"), ("xlm-roberta", "cls"), ("mpnet", "mean"),
                                                ("distilbert", "max")])
def test_other_architectures(tmp_path, model_type, pooling):
    src = random_model(tmp_path / "src", model_type, pooling=pooling, normalize=False)
    result = export_model(src, ExportOptions(out=tmp_path / "repo", name=model_type, max_batch_size=4))
    assert result.spec.input_names == ("input_ids", "attention_mask")
    assert [i.name for i in result.config.inputs] == ["input_ids", "attention_mask"]
    assert result.parity.passed, result.parity.table()
    out = _run_saved(result.target.version_dir, src, SENTENCES, result.spec.input_names)
    assert np.abs(out.numpy() - _encode(src, SENTENCES, normalize=False)).max() <= 1e-5


def test_int32_inputs_give_equal_output(tmp_path, minilm, minilm_export):
    result = export_model(minilm, ExportOptions(out=tmp_path, name="minilm32", int32=True, max_batch_size=4))
    cfg = read_config(result.target.model_dir / "config.pbtxt")
    from tritonclient.grpc import model_config_pb2 as pb

    assert {i.data_type for i in cfg.input} == {pb.TYPE_INT32}
    names = result.spec.input_names
    out32 = _run_saved(result.target.version_dir, minilm, SENTENCES, names, dtype=torch.int32)
    out64 = _run_saved(minilm_export.target.version_dir, minilm, SENTENCES, names)
    assert torch.equal(out32, out64)


def test_token_embeddings_output(tmp_path, minilm):
    result = export_model(minilm, ExportOptions(out=tmp_path, name="tok", token_embeddings=True, max_batch_size=4))
    assert [(o.name, o.dims) for o in result.config.outputs] == [("embedding", (384,)),
                                                                  ("token_embeddings", (-1, 384))]
    out = _run_saved(result.target.version_dir, minilm, SENTENCES, result.spec.input_names)
    assert isinstance(out, tuple) and len(out) == 2
    assert out[1].shape[:2] == (3, out[1].shape[1]) and out[1].shape[2] == 384
    assert np.abs(out[0].numpy() - _encode(minilm, SENTENCES, normalize=True)).max() <= 1e-5


def test_cli_trace_json(tmp_path, minilm):
    res = CliRunner().invoke(main, ["trace", minilm, "--out", str(tmp_path), "--name", "cli", "--json",
                                    "--max-batch-size", "4", "--instances", "2", "--preferred-batch-size", "2",
                                    "--max-queue-delay-us", "500", "--intra-op-threads", "1",
                                    "--inter-op-threads", "2"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["ok"] and summary["model"] == "cli" and summary["parity"]["passed"]
    cfg = read_config(tmp_path / "cli" / "config.pbtxt")
    assert cfg.instance_group[0].count == 2 and list(cfg.dynamic_batching.preferred_batch_size) == [2]
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 500
    assert cfg.parameters["INTRA_OP_THREAD_COUNT"].string_value == "1"
    assert cfg.parameters["INTER_OP_THREAD_COUNT"].string_value == "2"  # written because it was asked for


def test_cli_trace_human_output(tmp_path, minilm):
    res = CliRunner().invoke(main, ["trace", minilm, "--out", str(tmp_path), "--name", "h", "--max-batch-size", "2"])
    assert res.exit_code == 0, res.output
    assert "parity against sentence-transformers" in res.output and "max|diff|" in res.output
