"""Pure pieces: pooling against sentence-transformers' Pooling, spec reading, config validation and packaging."""
from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from model_factory import random_model

from exporter.errors import ConfigError
from exporter.checks.parity import compare
from exporter.export.pooling import POOLING_MODES, pool
from exporter.export.spec import SpecOverrides, read_spec
from exporter.export.triton_config import DynamicBatching, TensorConfig, TritonModelConfig, parse_pbtxt


@pytest.mark.parametrize("mode", POOLING_MODES)
@pytest.mark.parametrize("side", ["right", "left"])
def test_pooling_matches_sentence_transformers(mode, side):
    from sentence_transformers.sentence_transformer.modules.pooling import Pooling

    torch.manual_seed(0)
    tokens = torch.randn(4, 9, 8)
    mask = torch.ones(4, 9, dtype=torch.long)
    for row, length in enumerate([9, 5, 1, 3]):
        if side == "right":
            mask[row, length:] = 0
        else:
            mask[row, : 9 - length] = 0
    expected = Pooling(8, pooling_mode=mode)({"token_embeddings": tokens, "attention_mask": mask})
    got = pool(mode, tokens, mask)
    assert torch.allclose(got, expected["sentence_embedding"], atol=1e-6), mode


def test_compare_reports_max_abs_and_cosine():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    max_abs, min_cos = compare(a, b)
    assert max_abs == pytest.approx(1.0) and min_cos == pytest.approx(2 ** -0.5)
    assert compare(a, torch.tensor([[1.0, float("nan")], [0.0, 1.0]]))[1] == float("-inf")


def test_spec_reads_legacy_and_new_pooling_and_prompts(tmp_path):
    legacy = random_model(tmp_path / "legacy", "bert", pooling="cls", legacy_pooling=True, normalize=False)
    new = random_model(tmp_path / "new", "bert", pooling="lasttoken", prompts={"query": "query: "})
    assert read_spec(legacy).pooling == "cls" and not read_spec(legacy).normalize
    spec = read_spec(new)
    assert spec.pooling == "lasttoken" and spec.normalize and spec.max_seq_len == 64
    assert spec.prompts == {"query": "query: "}
    over = read_spec(new, SpecOverrides(pooling="weighted-mean", normalize=False, max_seq_len=100))
    assert (over.pooling, over.normalize, over.max_seq_len) == ("weightedmean", False, 100)


def test_roberta_positions_exclude_padding_offset(tmp_path):
    src = random_model(tmp_path / "r", "roberta", positions=66, max_seq_length=None)
    spec = read_spec(src)
    assert spec.max_positions == 64 and spec.max_seq_len == 64


def test_remote_code_needs_opt_in(tmp_path):
    """A checkpoint naming its own code (auto_map) loads with the native class only when every weight maps onto it;
    otherwise the error names the keys and --trust-remote-code."""
    from safetensors.torch import load_file, save_file

    from exporter.export.reference import load_reference

    src = Path(random_model(tmp_path / "r", "bert"))
    cfg = json.loads((src / "config.json").read_text())
    cfg["auto_map"] = {"AutoModel": "modeling_x.XModel"}
    (src / "config.json").write_text(json.dumps(cfg))
    weights = load_file(str(src / "model.safetensors"))
    renamed = {k.replace("pooler.dense", "pooler.projection"): v for k, v in weights.items()}
    save_file(renamed, str(src / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(Exception, match="--trust-remote-code") as info:
        load_reference(read_spec(str(src)))
    assert "pooler.projection" in str(info.value) and "auto_map" in str(info.value)


def _config(**changes):
    base = dict(name="m", max_batch_size=8, inputs=(TensorConfig("input_ids", "TYPE_INT64", (-1,)),),
                outputs=(TensorConfig("embedding", "TYPE_FP32", (4,)),))
    base.update(changes)
    return TritonModelConfig(**base)


@pytest.mark.parametrize("changes,field", [
    ({"inputs": (TensorConfig("x", "TYPE_INT64", (0,)),)}, "input 'x'.dims"),
    ({"outputs": (TensorConfig("y", "TYPE_BF16", (4,)),)}, "output 'y'.data_type"),
    ({"dynamic_batching": DynamicBatching(100, (16,))}, "dynamic_batching.preferred_batch_size"),
    ({"name": "../x"}, "field name"),
    ({"max_batch_size": 0}, "dynamic_batching"),
])
def test_config_validation_names_field(changes, field):
    with pytest.raises(ConfigError, match="Fix:") as info:
        _config(**changes)
    assert field in str(info.value)


def test_rendered_config_round_trips_through_protobuf():
    text = _config(parameters=(("INTRA_OP_THREAD_COUNT", "3"),)).render()
    cfg = parse_pbtxt(text)
    assert cfg.name == "m" and cfg.max_batch_size == 8 and cfg.parameters["INTRA_OP_THREAD_COUNT"].string_value == "3"
    with pytest.raises(ConfigError, match="protobuf rejects"):
        parse_pbtxt(text.replace("max_batch_size: 8", "max_batch_size: eight"))


def test_wheel_contains_templates_and_backend(tmp_path):
    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(root)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("tei_export-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "exporter/templates/config.pbtxt.j2" in names
    assert "exporter/triton/compat_backend/model.py" in names
    assert "exporter/checks/cpp/libtorch_check.cpp" in names
    assert {"exporter/cli.py", "exporter/export/pipeline.py", "exporter/checks/verify.py"} <= names


def test_tolerance_by_precision_and_device():
    from exporter.checks.parity import tolerance_for

    assert tolerance_for("float32", "cuda") == tolerance_for("float32") and tolerance_for("float32").max_abs == 1e-5
    assert tolerance_for("bfloat16").min_cosine == 0.9999  # CPU bf16 export keeps its tighter bound
    for dtype in ("float16", "bfloat16"):
        tol = tolerance_for(dtype, "cuda:0")
        assert tol.min_cosine == 0.999 and tol.max_abs is None
        assert tol.accepts(0.3, 0.9991) and not tol.accepts(0.0, 0.9989)


def test_first_line_of_an_error():
    from exporter.errors import first_line

    assert first_line(RuntimeError("")) == ""  # str(err).splitlines()[0] raised IndexError here
    assert first_line(RuntimeError("bad shape\n  at frame 3"), 5) == "bad s"
    assert first_line(RuntimeError("bad shape\n  at frame 3")) == "bad shape"


def test_error_text_never_doubles_a_period():
    from exporter.errors import TeiExportError

    # Library messages often end with a period; the ". Fix:" (or the location) that follows must not double it.
    assert str(TeiExportError("the cache is empty.", fix="download it")) == "the cache is empty. Fix: download it"
    assert str(TeiExportError("bad value.", where="--x")) == "bad value (--x)"
    assert str(TeiExportError("no fix here.")) == "no fix here."


def test_hub_failures_say_which_step_failed():
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    from exporter.export.spec import hub_error

    def chained(err, cause):
        err.__cause__ = cause
        return err

    offline = hub_error("org/m", chained(LocalEntryNotFoundError("no snapshot. Set HF_HUB_OFFLINE=0."),
                                         OfflineModeIsEnabled("offline mode is enabled")))
    assert "not in the local Hugging Face cache" in str(offline) and "HF_HUB_OFFLINE" in offline.fix
    # The hub client's own wording for a network failure starts "Got: ConnectError: ..."; ours names the step.
    unreachable = hub_error("org/m", chained(LocalEntryNotFoundError("Got: ConnectionRefusedError: refused"),
                                             ConnectionRefusedError(111, "Connection refused")))
    text = str(unreachable)
    assert "could not be reached (ConnectionRefusedError: [Errno 111] Connection refused)" in text
    assert "Got:" not in text and ".." not in text and "network" in unreachable.fix
    other = hub_error("org/m", RuntimeError("404 Repository Not Found for url ..."))
    assert "cannot get model 'org/m' from the Hugging Face hub: 404 Repository Not Found" in str(other)


def test_verify_report_counts_requests_and_texts_apart():
    from exporter.checks.parity import tolerance_for
    from exporter.checks.verify import Comparison, ModelCheck, RunResult, VerifyReport

    # 10 texts sent as 10 requests of 1 and as 3 requests of 4: Triton counts 20 inferences (texts) for a batching
    # model, and one per request for max_batch_size 0.
    same = [Comparison("fp32 eager", 1e-7, 1.0, tolerance_for("float32"))]
    runs = [RunResult("batch 1 x concurrency 8", 10, 10, same, 0.1),
            RunResult("batch 4 x concurrency 2", 3, 10, same, 0.1)]
    batching = ModelCheck("m", "grpc", texts=10, runs=list(runs), inferences=20, executions=6)
    unbatched = ModelCheck("p", "http", texts=10, runs=list(runs), inferences=13, executions=13, batching=False)
    report = VerifyReport("test server", [batching, unbatched])
    lines = report.table().splitlines()
    assert "m over grpc: dynamic batching ran 13 requests (20 texts) in 6 executions (2.2 requests per execution)" \
        in lines
    assert "p over http: max_batch_size 0, no dynamic batching: 13 requests (20 texts) in 13 executions" in lines
    data = report.to_dict()["checks"][0]
    assert (data["requests"], data["texts_sent"], data["inferences"], data["executions"]) == (13, 20, 20, 6)


def test_readiness_reads_the_repository_index(tmp_path):
    from exporter.triton.readiness import by_name, expected_models, load_failures, still_loading

    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
    (tmp_path / "a" / "1").mkdir()
    (tmp_path / "a" / "1" / "model.pt").write_bytes(b"x" * 7)
    (tmp_path / "a" / "config.pbtxt").write_text('name: "a"\nplatform: "pytorch_libtorch"\n')
    index = [{"name": "a", "version": "1", "state": "UNAVAILABLE", "reason": "failed to load\n\nAt:\n  frame"},
             {"name": "b", "version": "1", "state": "READY"}, {"name": "d", "version": "1", "state": "LOADING"}]
    # mode none: every folder is expected, listed or not; explicit: only what was asked for
    assert expected_models("none", (), index, tmp_path) == ["a", "b", "c", "d"]
    assert expected_models("explicit", ("b",), index, tmp_path) == ["b"]
    assert expected_models("explicit", ("*",), index, tmp_path) == ["a", "b", "d"]
    entries = by_name(index)
    assert still_loading(["a", "b", "d"], entries) == ["d"]
    failed = load_failures(["a", "b", "c"], entries, "E1126 model_lifecycle.cc] failed to load 'c': bad\n", tmp_path)
    assert failed[0] == f"'a' version 1: failed to load (model file {tmp_path / 'a' / '1' / 'model.pt'}, 7 bytes)"
    assert len(failed) == 2 and failed[1].startswith("'c': ") and "bad" in failed[1]


def test_backend_choices_name_the_forms_they_accept():
    from exporter.errors import ServerError
    from exporter.triton.backends import parse_choice

    assert parse_choice("auto") == ("auto", None)
    assert parse_choice("nvidia:main") == ("nvidia", "main")
    for bad in ("compat:main", "nvidia:", "cuda"):
        with pytest.raises(ServerError, match="nvidia:BRANCH"):
            parse_choice(bad)


def test_a_failing_verify_run_names_the_text_that_differed_most():
    import time

    import numpy as np

    from exporter.checks.corpus import KINDS, CorpusItem
    from exporter.checks.own_module import EAGER, OWN, Reference
    from exporter.checks.parity import Tolerance, tolerance_for
    from exporter.checks.verify import ModelCheck, VerifyReport, _record_run

    items = [CorpusItem(f"text {i}", KINDS[0]) for i in range(3)]
    expected = np.eye(3, dtype=np.float32)
    check = ModelCheck("m", "http", texts=3, references=[Reference(EAGER, "st", tolerance_for("float32"))])
    _record_run(check, "batch 2", 2, items, [expected], expected.copy(), time.monotonic())
    assert check.runs[0].passed and check.worst_text is None
    got = expected.copy()
    got[1] = [0.0, 0.6, 0.8]  # a different unit vector
    _record_run(check, "batch 1", 1, items, [expected], got, time.monotonic())
    assert not check.runs[1].passed and check.runs[1].requests == 3
    assert check.worst_text == f"{KINDS[0]}: 'text 1' (against {EAGER})"

    # A lossy export: within its gate of fp32 eager, but not its own module's rows: the run fails on the second.
    gate = Tolerance(max_abs=None, min_cosine=0.9)
    lossy = ModelCheck("q", "grpc", texts=3, references=[Reference(EAGER, "st", gate),
                                                         Reference(OWN, "model.pt", tolerance_for("float32"))])
    served = expected.copy()
    served[2] = [0.0, 0.1, 0.995]
    own = expected.copy()
    _record_run(lossy, "batch 1", 1, items, [expected, own], served, time.monotonic())
    eager_side, own_side = lossy.runs[0].comparisons
    assert eager_side.passed and not own_side.passed and not lossy.passed
    assert lossy.against(OWN) == [own_side] and lossy.against(EAGER) == [eager_side]
    assert lossy.worst_text == f"{KINDS[0]}: 'text 2' (against {OWN})"
    table = VerifyReport("test server", [lossy]).table()
    assert "q against own module (model.pt): max|diff| <= 1e-05 and cosine >= 0.99999 per row" in table
    assert table.count("FAIL") == 2 and "verdict: FAIL" in table  # the own-module row and the verdict
    run = VerifyReport("test server", [lossy]).to_dict()["checks"][0]["runs"][0]
    assert [c["passed"] for c in run["comparisons"]] == [True, False] and not run["passed"]


def test_requests_are_padded_to_buckets_only_where_a_batcher_needs_equal_lengths():
    from exporter.tokens import DEFAULT_BUCKETS, request_buckets

    assert request_buckets("padded", concurrent=True) == DEFAULT_BUCKETS
    assert request_buckets("padded", concurrent=False) is None
    assert request_buckets("ragged", concurrent=True) is None


def test_reports_are_strict_json():
    from exporter.report_json import dumps

    text = dumps({"p50_ms": float("nan"), "ratio": float("inf"), "out": Path("a/b"), "cells": (1.5, float("-inf"))},
                 indent=None)
    assert json.loads(text) == {"p50_ms": None, "ratio": None, "out": "a/b", "cells": [1.5, None]}
