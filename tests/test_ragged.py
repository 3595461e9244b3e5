"""trace --batching ragged: the scripted ragged module fed exactly as NVIDIA's LibTorch backend feeds it (all merged
requests' tokens as one flat int64 tensor, each request's end offset as int32), compared with
``SentenceTransformer.encode`` on the same texts; its config, metadata, refusals and the text model's files (served:
tests/test_ragged_served.py)."""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from model_factory import random_model

from exporter.cli import main
from exporter.checks.corpus import build_corpus
from exporter.errors import ConfigError, UnsupportedModelError
from exporter.export.pipeline import ExportOptions, export_model
from exporter.export.metadata import ExportMetadata
from exporter.export.pooling import POOLING_MODES
from exporter.export.batching import DEFAULT_TOKEN_BUDGET
from exporter.export.ragged import pack
from exporter.export.triton_config import BatchInput, TensorConfig, TritonModelConfig, Warmup, read_config

BUDGET = 256  # small, so that a couple of dozen sentences already need several encoder calls


@pytest.fixture(scope="module")
def ragged(minilm, tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo_ragged")
    return export_model(minilm, ExportOptions(out=repo, name="mr", batching="ragged", max_batch_size=16,
                                              ragged_token_budget=BUDGET, with_tokenizer=True,
                                              tokenizer="python"))


@pytest.fixture(scope="module")
def module(ragged):
    return torch.jit.load(str(ragged.target.version_dir / "model.pt"))


@pytest.fixture(scope="module")
def corpus(st_model):
    """Texts of many lengths (one token, max length, over-long, non-ASCII, empty), in no particular order."""
    items = build_corpus(24, tokenizer=st_model.tokenizer, max_seq_len=st_model.max_seq_length)
    return [i.text for i in items] + ["", "Embeddings!"]


def _tokens(st_model, texts):
    return st_model.tokenizer(texts, truncation=True, max_length=st_model.max_seq_length)["input_ids"]


def _run(module, texts, dtype=torch.int64):
    ids, offsets = pack(texts, dtype)
    assert ids.dim() == 1 and offsets.dtype == torch.int32
    with torch.inference_mode():
        return module(ids, offsets)


def test_module_as_the_backend_calls_it_equals_encode(module, corpus, st_model):
    tokens = _tokens(st_model, corpus)
    lengths = torch.tensor([len(t) for t in tokens])
    assert len(set(lengths.tolist())) > 10 and lengths.max() == st_model.max_seq_length
    assert len(module.chunks(lengths)) >= 3  # the budget splits this batch into several encoder calls
    got = _run(module, tokens)
    want = st_model.encode(corpus, convert_to_tensor=True)
    assert got.shape == want.shape and got.dtype == torch.float32
    assert (got - want).abs().max() <= 1e-5  # row i is request i: order survives the sort by length
    cosine = torch.nn.functional.cosine_similarity(got, want, dim=1)
    assert cosine.min() >= 0.99999


def test_one_request_and_the_backends_own_end_offsets(module, st_model):
    """Five requests of 2..6 tokens arrive as ids [20] and offsets [2, 5, 9, 14, 20]; one request alone as ids [L]."""
    texts = [[101] + [2023 + k for k in range(n - 2)] + [102] for n in range(2, 7)]
    ids, offsets = pack(texts)
    assert ids.shape == (20,) and offsets.tolist() == [2, 5, 9, 14, 20]
    with torch.inference_mode():
        merged = module(ids, offsets)
        alone = torch.cat([module(*pack([t])) for t in texts])
    assert merged.shape == (5, 384) and (merged - alone).abs().max() <= 1e-5


def test_forward_schema_is_config_inputs_plus_batch_input(ragged, module):
    cfg = read_config(ragged.target.model_dir / "config.pbtxt")
    names = [a.name for a in module.forward.schema.arguments][1:]
    targets = [name for b in cfg.batch_input for name in b.target_name]
    assert names == [i.name for i in cfg.input] + targets == ["input_ids", "offsets"]


def test_config_has_the_ragged_fields(ragged, module):
    from tritonclient.grpc import model_config_pb2 as pb

    cfg = read_config(ragged.target.model_dir / "config.pbtxt")
    assert cfg.max_batch_size == 16 and cfg.HasField("dynamic_batching")
    [ids] = cfg.input
    assert (ids.name, ids.data_type, list(ids.dims), ids.allow_ragged_batch) == ("input_ids", pb.TYPE_INT64, [-1],
                                                                                 True)
    [offsets] = cfg.batch_input
    assert offsets.kind == pb.BatchInput.BATCH_ACCUMULATED_ELEMENT_COUNT and offsets.data_type == pb.TYPE_INT32
    assert list(offsets.target_name) == ["offsets"] and list(offsets.source_input) == ["input_ids"]
    assert [(o.name, list(o.dims)) for o in cfg.output] == [("embedding", [384])]
    # Warm-up: each of batch_size requests is one text of zeros; the backend passes ids [n] and offsets [n].
    [warm] = cfg.model_warmup
    assert warm.batch_size == 1 and set(warm.inputs) == {"input_ids"}
    n = warm.inputs["input_ids"].dims[0]
    with torch.inference_mode():
        out = module(torch.zeros(n, dtype=torch.int64), torch.tensor([n], dtype=torch.int32))
    assert out.shape == (1, 384) and torch.isfinite(out).all()


def test_parity_grid_covers_ragged_batches(ragged):
    report = ragged.parity
    assert report.passed and report.max_abs_diff <= 1e-5 and report.min_cosine >= 0.99999, report.table()
    cases = {c.name.split(" (")[0]: c for c in report.cases}
    assert {"one request", "single token", "many lengths, request order", "max batch", "max length",
            "position limit", "several chunks", "encode() on sentences"} <= set(cases)
    assert cases["max length"].seq_len == 256 and cases["position limit"].seq_len == 512
    assert cases["max batch"].batch == 16 and cases["single token"].seq_len == 1
    assert next(c.name for c in report.cases if c.name.startswith("several chunks")).endswith("chunks)")


def test_metadata_records_ragged(ragged):
    meta = ExportMetadata.read(ragged.target.version_dir)
    assert (meta.batching, meta.input_names, meta.offsets_input, meta.token_budget) == ("ragged", ["input_ids"],
                                                                                       "offsets", BUDGET)
    assert ragged.to_dict()["batching"] == "ragged"


def test_libtorch_check_skips_a_ragged_model_saying_why(ragged):
    from exporter.checks.libtorch_check import check_libtorch

    report = check_libtorch(ragged.target.model_dir)
    assert report.skipped and not report.ok and "ragged" in report.skip_reason


def test_zero_length_and_over_long_requests_do_not_fail_their_neighbours(module, st_model):
    """A batch's error would fail every request merged into it: an empty request gets a zero row, and a text longer
    than the position embeddings is cut to its first 512 tokens."""
    texts = ["first text", "second one here"]
    tokens = _tokens(st_model, texts)
    long = (tokens[0] * 400)[:700]
    got = _run(module, [tokens[0], [], long, tokens[1]])
    want = st_model.encode(texts, convert_to_tensor=True)
    assert torch.equal(got[1], torch.zeros(384))
    assert (got[[0, 3]] - want).abs().max() <= 1e-5
    assert (got[2] - _run(module, [long[:512]])[0]).abs().max() <= 1e-5


def test_offsets_that_do_not_match_the_ids_are_refused(module):
    with pytest.raises(torch.jit.Error, match="end offset of each request"):
        module(torch.arange(10), torch.tensor([4, 8], dtype=torch.int32))


def test_int32_inputs_give_the_same_rows(tmp_path, minilm, module, st_model):
    result = export_model(minilm, ExportOptions(out=tmp_path, name="m32", batching="ragged", int32=True,
                                                max_batch_size=4, ragged_token_budget=BUDGET))
    from tritonclient.grpc import model_config_pb2 as pb

    cfg = read_config(result.target.model_dir / "config.pbtxt")
    assert [i.data_type for i in cfg.input] == [pb.TYPE_INT32] and cfg.batch_input[0].data_type == pb.TYPE_INT32
    m32 = torch.jit.load(str(result.target.version_dir / "model.pt"))
    tokens = _tokens(st_model, ["an int32 request", "and a second, longer int32 request"])
    assert torch.equal(_run(m32, tokens, torch.int32), _run(module, tokens))


@pytest.mark.parametrize("pooling", POOLING_MODES)
def test_every_pooling_mode(tmp_path, pooling):
    src = random_model(tmp_path / "src", "bert", pooling=pooling, normalize=pooling != "max")
    result = export_model(src, ExportOptions(out=tmp_path / "repo", name="p", batching="ragged", max_batch_size=8,
                                             ragged_token_budget=64))
    assert result.parity.passed, result.parity.table()
    _check_saved_against_encode(result, src)


def test_roberta_positions(tmp_path):
    """RoBERTa numbers positions from its pad id (1) on: two fewer positions, so its own position limit case."""
    src = random_model(tmp_path / "src", "roberta", pooling="mean", normalize=False)
    result = export_model(src, ExportOptions(out=tmp_path / "repo", name="r", batching="ragged", max_batch_size=8,
                                             ragged_token_budget=64))
    assert result.parity.passed, result.parity.table()
    assert any(c.name.startswith("position limit") and c.seq_len == 128 for c in result.parity.cases)
    _check_saved_against_encode(result, src)


def test_bge_small_shape_cls_pooling(tmp_path, bge_like):
    result = export_model(bge_like, ExportOptions(out=tmp_path, name="bge", batching="ragged", max_batch_size=8,
                                                  ragged_token_budget=1024))
    assert result.spec.pooling == "cls" and result.spec.max_seq_len == 512
    assert result.parity.passed, result.parity.table()
    assert any(c.name.startswith("several chunks") and c.name.endswith("chunks)") for c in result.parity.cases)
    _check_saved_against_encode(result, bge_like)


def _check_saved_against_encode(result, source):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(source, device="cpu")
    texts = ["Triton serves TorchScript models.", "A short one.", "x",
             "Embeddings map text to vectors so that similar meanings end up close together in the space."]
    module = torch.jit.load(str(result.target.version_dir / "model.pt"))
    got = _run(module, _tokens(st, texts))
    assert (got - st.encode(texts, convert_to_tensor=True)).abs().max() <= 1e-5


def test_cli_default_budget(tmp_path, minilm):
    res = CliRunner().invoke(main, ["trace", minilm, "--out", str(tmp_path), "--name", "cli", "--batching",
                                    "ragged", "--max-batch-size", "4", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["ok"] and summary["batching"] == "ragged" and summary["inputs"] == ["input_ids"]
    assert ExportMetadata.read(tmp_path / "cli" / "1").token_budget == DEFAULT_TOKEN_BUDGET
    assert any(c["name"].startswith("several chunks") for c in summary["parity"]["cases"])


@pytest.mark.parametrize("args,message", [
    (["--format", "pt2"], "use --format torchscript with --batching ragged"),
    (["--token-embeddings"], "export --token-embeddings with --batching padded"),
    (["--with-tokenizer", "--buckets", "16,32"], "drop --buckets"),
    (["--ragged-token-budget", "0"], "pass --ragged-token-budget"),
])
def test_refusals_exit_non_zero_and_write_nothing(tmp_path, minilm, args, message):
    out = tmp_path / "repo"
    res = CliRunner().invoke(main, ["trace", minilm, "--out", str(out), "--batching", "ragged", *args])
    assert res.exit_code != 0 and message in res.output and "Fix:" in res.output, res.output
    assert not out.exists()


def test_budget_without_ragged_is_refused(tmp_path, minilm):
    res = CliRunner().invoke(main, ["trace", minilm, "--out", str(tmp_path / "repo"), "--ragged-token-budget", "64"])
    assert res.exit_code != 0 and "add --batching ragged" in res.output
    assert not (tmp_path / "repo").exists()
    with pytest.raises(UnsupportedModelError, match="unknown batching"):
        ExportOptions(batching="jagged").validate()


def _config(**changes):
    base = dict(name="m", max_batch_size=8,
                inputs=(TensorConfig("input_ids", "TYPE_INT64", (-1,), allow_ragged_batch=True),),
                outputs=(TensorConfig("embedding", "TYPE_FP32", (4,)),),
                batch_inputs=(BatchInput("BATCH_ACCUMULATED_ELEMENT_COUNT", "offsets", "TYPE_INT32", "input_ids"),))
    base.update(changes)
    return TritonModelConfig(**base)


@pytest.mark.parametrize("changes,field,fix", [
    ({"batch_inputs": (BatchInput("BATCH_ACCUMULATED_ELEMENT_COUNT", "offsets", "TYPE_INT64", "input_ids"),)},
     "batch_input 'offsets'.data_type", "TYPE_INT32"),
    ({"batch_inputs": (BatchInput("BATCH_ACCUMULATED_ELEMENT_COUNT", "offsets", "TYPE_INT32", "ids"),)},
     "batch_input 'offsets'.source_input", "input_ids"),
    ({"batch_inputs": (BatchInput("BATCH_ACCUMULATED_ELEMENT_COUNT", "input_ids", "TYPE_INT32", "input_ids"),)},
     "batch_input 'input_ids'.target_name", "own forward() argument name"),
    ({"batch_inputs": (BatchInput("ACCUMULATED", "offsets", "TYPE_INT32", "input_ids"),)},
     "batch_input 'offsets'.kind", "BATCH_ACCUMULATED_ELEMENT_COUNT"),
    ({"max_batch_size": 0, "dynamic_batching": None}, "input 'input_ids'.allow_ragged_batch", "max_batch_size > 0"),
    ({"warmup": (Warmup("w", 1, (TensorConfig("offsets", "TYPE_INT32", (4,)),)),)},
     "model_warmup 'w'.inputs 'offsets'", "leave batch_input targets out"),
])
def test_config_validation_names_the_ragged_field(changes, field, fix):
    with pytest.raises(ConfigError) as info:
        _config(**changes)
    assert field in str(info.value) and fix in str(info.value)


def test_rendered_ragged_config_round_trips():
    from tritonclient.grpc import model_config_pb2 as pb

    from exporter.export.triton_config import parse_pbtxt

    cfg = parse_pbtxt(_config().render())
    assert cfg.input[0].allow_ragged_batch and cfg.batch_input[0].kind == pb.BatchInput.BATCH_ACCUMULATED_ELEMENT_COUNT


# --- the text model beside a ragged token model -------------------------------------------------------------------


def test_text_model_files(ragged):
    repo = ragged.target.repo
    assert not (repo / "mr_tokenizer").exists()  # the text model tokenizes itself
    cfg = read_config(repo / "mr_text" / "config.pbtxt")
    assert cfg.backend == "python" and cfg.max_batch_size == 16 and not cfg.platform
    assert [(i.name, list(i.dims)) for i in cfg.input] == [("text", [1])]
    assert [(o.name, list(o.dims)) for o in cfg.output] == [("embedding", [384])]
    settings = json.loads((repo / "mr_text" / "1" / "text_settings.json").read_text())
    assert settings["token_model"] == {"name": "mr", "input": "input_ids", "data_type": "TYPE_INT64",
                                       "output": "embedding"}


def test_existing_text_model_refused_before_writing(tmp_path, minilm):
    from exporter.errors import RepositoryError

    (tmp_path / "mr_text" / "1").mkdir(parents=True)
    with pytest.raises(RepositoryError, match="already exists"):
        export_model(minilm, ExportOptions(out=tmp_path, name="mr", batching="ragged", with_tokenizer=True))
    assert not (tmp_path / "mr").exists()
