"""Differential tests: NVIDIA's LibTorch backend (C++, pytorch_backend r24.10 built from source by the set-up) and
tei-export's compatibility backend get the same models and the same requests, good and bad.

NVIDIA's behaviour is the truth. For every case both must take the same decision (answer, refuse the request, or
refuse to load), answers must agree within 1e-6, and the error texts are compared: the compatibility backend gives
NVIDIA's words (their first line: C++ exceptions go on with a native stack trace; after the Python backend's own
prefix, for load errors). Every case's outcome on both is written side
by side to the file named by ``$TEI_EXPORT_DIFF_REPORT`` (a Markdown table), for the record.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np
import pytest

import _triton_fixtures as fx
from conftest import require_module
from exporter.errors import ServerError
from exporter.triton.server import TritonServer

httpclient = require_module("tritonclient.http", part="tritonclient")
from tritonclient.utils import InferenceServerException  # noqa: E402

BACKENDS = ("nvidia", "compat")
ROWS: list[tuple[str, str, str, str]] = []  # (case, nvidia, compat, verdict) for the report


@dataclass
class Outcome:
    kind: str  # "answer", "request error", "load refused"
    text: str = ""
    arrays: dict | None = None

    def cell(self) -> str:
        if self.kind == "answer":
            return "answer " + ", ".join(f"{k} {v.dtype} {list(v.shape)}" for k, v in (self.arrays or {}).items())
        return f"{self.kind}: {self.text}"


def _record(case: str, got: dict[str, Outcome], verdict: str) -> None:
    ROWS.append((case, got["nvidia"].cell(), got["compat"].cell(), verdict))


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    path = os.environ.get("TEI_EXPORT_DIFF_REPORT")
    if path and ROWS:
        lines = ["| case | NVIDIA r24.10 | compatibility backend | verdict |", "|---|---|---|---|"]
        for row in ROWS:
            lines.append("| " + " | ".join(cell.replace("|", "\\|").replace("\n", " ") for cell in row) + " |")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def repo(tmp_path_factory, minilm_export):
    repo = tmp_path_factory.mktemp("diff_repo")
    fx.copy_model(minilm_export.target.model_dir, repo, "minilm", queue_delay_us=20000)
    fx.write_tiny_models(repo)
    fx.write_contract_models(repo)
    return repo


@pytest.fixture(scope="module")
def servers(repo, binary, nvidia_backend, tmp_path_factory):
    logs = tmp_path_factory.mktemp("diff_logs")
    started = {}
    try:
        for backend in BACKENDS:
            started[backend] = TritonServer(repo, binary=binary, backend=backend,
                                            log_path=logs / f"{backend}.log").start()
        yield started
    finally:
        for server in started.values():
            server.stop()


def _wire(array: np.ndarray) -> str:
    return "BYTES" if array.dtype == np.object_ else {
        np.dtype(np.int64): "INT64", np.dtype(np.int32): "INT32", np.dtype(np.float32): "FP32",
        np.dtype(np.float64): "FP64"}[array.dtype]


def _call(server: TritonServer, model: str, inputs: dict[str, np.ndarray], outputs: list[str]) -> Outcome:
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        wire = []
        for name, array in inputs.items():
            item = httpclient.InferInput(name, list(array.shape), _wire(array))
            item.set_data_from_numpy(array)
            wire.append(item)
        result = client.infer(model, wire, outputs=[httpclient.InferRequestedOutput(o) for o in outputs])
        return Outcome("answer", arrays={o: result.as_numpy(o) for o in outputs})
    except InferenceServerException as err:
        return Outcome("request error", str(err))
    finally:
        client.close()


def _both(servers, case: str, model: str, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, Outcome]:
    got = {b: _call(servers[b], model, inputs, outputs) for b in BACKENDS}
    nvidia, compat = got["nvidia"], got["compat"]
    assert nvidia.kind == compat.kind, f"{case}: NVIDIA gave {nvidia.cell()}, compat gave {compat.cell()}"
    if nvidia.kind == "answer":
        for name in outputs:
            a, b = nvidia.arrays[name], compat.arrays[name]
            assert a.dtype == b.dtype and a.shape == b.shape, f"{case}: {name} {a.dtype}{a.shape} vs {b.dtype}{b.shape}"
            diff = float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()) if a.size else 0.0
            assert diff <= 1e-6, f"{case}: {name} differs by {diff}"
        _record(case, got, "same answer")
    else:  # the first line: NVIDIA's C++ exceptions go on with a native stack trace (addresses) that no imitation has
        first = {b: o.text.splitlines()[0] for b, o in got.items()}
        assert first["compat"] == first["nvidia"], f"{case}: error texts differ:\nNVIDIA: {first['nvidia']}\n" \
                                                   f"compat: {first['compat']}"
        _record(case, {b: Outcome(o.kind, first[b]) for b, o in got.items()}, "same error text")
    return got


def test_servers_use_the_backends_asked_for(servers):
    assert not servers["nvidia"].compat_backend and servers["compat"].compat_backend
    assert servers["nvidia"].served_by("minilm").startswith("NVIDIA C++ libtriton_pytorch.so")
    assert servers["compat"].served_by("minilm") == "compatibility backend (model.py)"


# -- good requests: the same answers -----------------------------------------------------------------------------
def test_minilm_batch(servers, st_model):
    enc = fx.tokenize(st_model, fx.SENTENCES)
    got = _both(servers, "MiniLM export, batch of 3 padded texts", "minilm", enc, ["embedding"])
    ref = st_model.encode(fx.SENTENCES, convert_to_numpy=True)
    assert np.abs(got["nvidia"].arrays["embedding"] - ref).max() <= 1e-5


def test_named_index_and_tuple_outputs(servers):
    a = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32)
    b = np.array([[1, 1, 1], [2, 2, 2]], dtype=np.float32)
    got = _both(servers, "<name>__<index> inputs/outputs, config order reversed", "pair", {"A__0": a, "B__1": b},
                ["DIFF__0", "DOUBLE__1"])
    np.testing.assert_array_equal(got["nvidia"].arrays["DIFF__0"], a - b)


def test_first_double_underscore_decides(servers):
    x, y = np.array([[1, 2]], dtype=np.float32), np.array([[10, 20]], dtype=np.float32)
    got = _both(servers, "names p__x__1, q__y__0 (not <name>__<index>): config order", "dunder",
                {"p__x__1": x, "q__y__0": y}, ["y"])
    np.testing.assert_array_equal(got["nvidia"].arrays["y"], x - y)


def test_list_of_strings_input(servers):
    texts = np.array(["ab".encode(), "cde".encode(), "".encode()], dtype=np.object_)
    got = _both(servers, "List[str] argument (TYPE_STRING input)", "strings", {"texts": texts}, ["n"])
    assert got["nvidia"].arrays["n"].tolist() == [2, 3, 0]


def test_ragged_batch_inputs(servers):
    """Concurrent ragged requests: flat elements + accumulated element counts, one row per request."""
    from concurrent.futures import ThreadPoolExecutor

    arrays = [np.arange(1, n + 2, dtype=np.float32).reshape(1, -1) for n in (1, 4, 2, 0, 3)]
    results = {}
    for backend in BACKENDS:
        with ThreadPoolExecutor(len(arrays)) as pool:
            results[backend] = list(pool.map(lambda a: _call(servers[backend], "ragged", {"x": a}, ["s"]), arrays))
    for k, array in enumerate(arrays):
        pair = {b: results[b][k] for b in BACKENDS}
        assert pair["nvidia"].kind == pair["compat"].kind == "answer", {b: o.cell() for b, o in pair.items()}
        assert pair["nvidia"].arrays["s"].tolist() == pair["compat"].arrays["s"].tolist() == [[float(array.sum())]]
    _record("ragged input + BATCH_ACCUMULATED_ELEMENT_COUNT, 5 concurrent requests of 2-5 elements",
            {b: results[b][1] for b in BACKENDS}, "same answers")


# -- bad requests: the same refusal, in the same words -----------------------------------------------------------
def test_wrong_dtype(servers, st_model):
    enc = {k: v.astype(np.int32) for k, v in fx.tokenize(st_model, fx.SENTENCES[:1]).items()}
    got = _both(servers, "INT32 sent to a TYPE_INT64 input", "minilm", enc, ["embedding"])
    assert "INT32" in got["nvidia"].text and "INT64" in got["nvidia"].text


def test_wrong_rank(servers, st_model):
    enc = {k: v[..., None] for k, v in fx.tokenize(st_model, fx.SENTENCES[:1]).items()}
    _both(servers, "rank 3 sent to a [-1] input", "minilm", enc, ["embedding"])


def test_missing_input(servers, st_model):
    enc = fx.tokenize(st_model, fx.SENTENCES[:1])
    del enc["token_type_ids"]
    got = _both(servers, "token_type_ids missing", "minilm", enc, ["embedding"])
    assert "token_type_ids" in got["nvidia"].text


def test_batch_above_max_batch_size(servers, st_model):
    enc = fx.tokenize(st_model, ["x"] * 17)
    _both(servers, "batch 17 to max_batch_size 16", "minilm", enc, ["embedding"])


def test_output_dtype_mismatch(servers):
    got = _both(servers, "config TYPE_FP16, model returns FP32", "fp16_out", {"x": np.ones((2, 2), np.float32)},
                ["y"])
    assert "configuration expects datatype TYPE_FP16 for output 'y', model provides TYPE_FP32" in got["nvidia"].text


def test_dict_output(servers):
    _both(servers, "forward() returns a dict", "dict_out", {"x": np.ones((1, 2), np.float32)}, ["y"])


def test_list_of_tensors_output(servers):
    _both(servers, "forward() returns a list of tensors", "list_out", {"x": np.ones((1, 2), np.float32)}, ["y"])


def test_scalar_output(servers):
    _both(servers, "forward() returns a 0-dim tensor", "scalar_out", {"x": np.ones((1, 2), np.float32)}, ["y"])


def test_output_index_beyond_outputs(servers):
    _both(servers, "output y__3 of a model with one output", "out_index", {"x": np.ones((1, 2), np.float32)},
          ["y__3"])


def test_repeated_input_index(servers):
    x = np.ones((1, 2), np.float32)
    got = _both(servers, "inputs a__0 and b__0 (same index)", "dup_index", {"a__0": x, "b__0": x}, ["y"])
    assert "argument 'b'" in got["nvidia"].text


def test_parameters_read_alike(servers):
    x = np.array([[1.5, -2.0]], np.float32)
    _both(servers, "INTRA_OP_THREAD_COUNT '1 thread', DISABLE_OPTIMIZED_EXECUTION 'TRUE'", "lenient_params",
          {"x": x}, ["y"])
    for backend in BACKENDS:
        log = servers[backend].log_text()
        assert "Intra op thread count is set to 1 for model instance 'lenient_params'" in log, backend
        assert "Optimized execution is disabled for model instance 'lenient_params'" in log, backend


# -- models that must not load -----------------------------------------------------------------------------------
def _load_errors(text: str) -> dict[str, str]:
    """{model: its load error} from a ServerError's "failed to load 'a': ...; 'b': ..." text."""
    body = text.split("failed to load ", 1)[1].split(". Fix:", 1)[0]
    parts = re.split(r"(?:^|; )'([^']+)'(?: version \d+)?: ", body)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def _core(load_error: str) -> str:
    """A load error without what the two ways of loading add around the backend's own message: Triton's status
    word (NVIDIA's codes; the Python backend reports every initialize() failure as Internal), the Python exception's
    class name, and the model file's folder (the repository, or the server's temporary view of it)."""
    text = re.sub(r"^(Invalid argument|Internal|Unavailable|Not found|Unknown|Unsupported): ", "", load_error)
    text = re.sub(r"^CompatBackendError: ", "", text)
    return re.sub(r"'/[^']*/(\d+/[^'/]+)'", r"'.../\1'", text)


def test_load_refusals(binary, nvidia_backend, tmp_path):
    repo = tmp_path / "bad"
    fx.write_bad_models(repo)
    errors = {}
    for backend in BACKENDS:
        _, text = fx.start_must_fail(repo, binary, backend=backend, startup_timeout=120,
                                     log_path=tmp_path / f"{backend}.log")
        errors[backend] = _load_errors(text)
    assert set(errors["nvidia"]) == set(errors["compat"]) == {"bad_args", "bad_param", "int_arg", "no_file"}
    for model in sorted(errors["nvidia"]):
        nvidia, compat = errors["nvidia"][model], errors["compat"][model]
        _record(f"load: {model}", {"nvidia": Outcome("load refused", nvidia), "compat": Outcome("load refused", compat)},
                "both refuse, same message")
        assert _core(compat) == _core(nvidia), f"{model}:\nNVIDIA: {nvidia}\ncompat: {compat}"


def test_interop_threads_in_two_models(binary, nvidia_backend, tmp_path):
    """r24.10 aborts the whole server; the compatibility backend refuses the second model, in NVIDIA's words."""
    repo = tmp_path / "interop"
    fx.write_interop_models(repo)
    outcomes = {}
    for backend in BACKENDS:
        server = TritonServer(repo, binary=binary, backend=backend, startup_timeout=120,
                              log_path=tmp_path / f"{backend}.log")
        with pytest.raises(ServerError) as err:
            server.start()
        assert any("interop_0, interop_1 all set INTER_OP_THREAD_COUNT" in w for w in server.warnings)
        outcomes[backend] = str(err.value)
    assert "killed by SIGABRT" in outcomes["nvidia"]
    assert "cannot set number of interop threads" in outcomes["nvidia"]
    assert "remove INTER_OP_THREAD_COUNT from every config.pbtxt but one" in outcomes["nvidia"]  # the fix, named
    refused = _load_errors(outcomes["compat"])
    assert len(refused) == 1 and "cannot set number of interop threads" in next(iter(refused.values()))
    _record("two models set INTER_OP_THREAD_COUNT",
            {"nvidia": Outcome("load refused", "server aborted (SIGABRT): cannot set number of interop threads"),
             "compat": Outcome("load refused", next(iter(refused.values())))},
            "both refuse (NVIDIA: whole server; compat: the second model)")


def test_two_exports_load_together(binary, nvidia_backend, minilm_export, st_model, tmp_path):
    """Two tei-export models in one repository (what aborted NVIDIA's backend before exports stopped writing
    INTER_OP_THREAD_COUNT) load on both backends and answer alike."""
    repo = tmp_path / "two"
    for name in ("first", "second"):
        fx.copy_model(minilm_export.target.model_dir, repo, name)
    enc = fx.tokenize(st_model, fx.SENTENCES)
    ref = st_model.encode(fx.SENTENCES, convert_to_numpy=True)
    for backend in BACKENDS:
        with TritonServer(repo, binary=binary, backend=backend, log_path=tmp_path / f"two-{backend}.log") as server:
            assert set(server.models) == {"first", "second"} and not server.warnings
            for name in ("first", "second"):
                got = _call(server, name, enc, ["embedding"])
                assert got.kind == "answer", got.text
                assert np.abs(got.arrays["embedding"] - ref).max() <= 1e-5
