"""Real tritonserver (the one bundled in nvidia-pytriton) serving TorchScript through exporter.triton.server.

The server runs with the backend ``auto`` picks: NVIDIA's libtriton_pytorch.so built by the set-up (``tei-export
backend build``), else the compatibility backend. One server per module serves all-MiniLM-L6-v2 (exported by
exporter.export.pipeline, the session's ``minilm_export``) and a few tiny scripted models; short-lived servers check
that a broken model makes TritonServer raise with the server's load error. tests/test_differential.py runs the same
kind of cases on both backends side by side.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import _triton_fixtures as fx  # noqa: E402  (tests/ is on sys.path under pytest's rootdir-less import mode)
from conftest import no_fallback_under_ci, require, require_module  # noqa: E402
from exporter.errors import ServerError  # noqa: E402
from exporter.triton.backends import COMPAT_FILES, COMPAT_BACKEND_NAME, COMPAT_MODEL_PY, prepare_backends  # noqa: E402
from exporter.triton.binary import find_tritonserver  # noqa: E402
from exporter.triton.server import TritonServer  # noqa: E402
from exporter.triton_client import TritonClient  # noqa: E402

httpclient = require_module("tritonclient.http", part="tritonclient")
grpcclient = require_module("tritonclient.grpc", part="tritonclient")
from tritonclient.utils import InferenceServerException  # noqa: E402


# --------------------------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("backend-cache")


@pytest.fixture(scope="module")
def server(binary, minilm_export, cache_dir, tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    fx.copy_model(minilm_export.target.model_dir, repo, "minilm", queue_delay_us=20000)
    fx.write_tiny_models(repo)
    srv = TritonServer(
        repo, binary=binary, cache_dir=cache_dir, log_path=tmp_path_factory.mktemp("logs") / "triton.log"
    )
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture()
def http(server):
    client = httpclient.InferenceServerClient(server.http_url, concurrency=8)
    yield client
    client.close()


@pytest.fixture()
def grpc(server):
    client = grpcclient.InferenceServerClient(server.grpc_url)
    yield client
    client.close()


def _inputs(module, enc, dtype="INT64"):
    out = []
    for name, array in enc.items():
        item = module.InferInput(name, list(array.shape), dtype)
        item.set_data_from_numpy(array)
        out.append(item)
    return out


def _good_request(http, st_model):
    enc = fx.tokenize(st_model, fx.SENTENCES[:1])
    got = http.infer("minilm", _inputs(httpclient, enc)).as_numpy("embedding")
    assert got.shape == (1, 384)
    ref = st_model.encode(fx.SENTENCES[:1], convert_to_numpy=True)
    assert np.abs(got - ref).max() <= 1e-5


# --------------------------------------------------------------------------------------------------------------
# finding the server and the backend
# --------------------------------------------------------------------------------------------------------------
def test_find_tritonserver(binary):
    assert binary.path.is_file()
    assert binary.origin in ("explicit", "PATH", "/opt/tritonserver", "nvidia-pytriton")
    major, minor, *_ = binary.version.split(".")
    assert major.isdigit() and minor.isdigit(), binary.version
    if binary.origin == "nvidia-pytriton":
        assert binary.version == "2.51.0"
        assert "nvidia_pytriton.libs" in binary.env["LD_LIBRARY_PATH"]
        assert binary.python_stubs_dir is not None


def test_find_tritonserver_explicit(binary):
    again = find_tritonserver(str(binary.path))
    assert again.origin == "explicit" and again.version == binary.version
    root = binary.path.parent.parent
    assert find_tritonserver(root).path.resolve() == binary.path.resolve()  # an install folder works too


def test_find_tritonserver_errors(tmp_path):
    with pytest.raises(ServerError, match="does not exist") as err:
        find_tritonserver(tmp_path / "nope" / "tritonserver")
    assert str(tmp_path / "nope") in str(err.value)
    with pytest.raises(ServerError, match="no tritonserver found") as err:
        find_tritonserver(path_env="", opt_root=tmp_path / "opt", use_pytriton=False)
    text = str(err.value)
    assert "PATH" in text and str(tmp_path / "opt" / "bin" / "tritonserver") in text and "Fix:" in text


def test_backend_assembled(binary, cache_dir):
    setup = prepare_backends(binary, "compat", cache_dir)
    if (binary.backend_dir / "pytorch" / "libtriton_pytorch.so").is_file():  # pragma: no cover - NGC image
        assert prepare_backends(binary, "auto", cache_dir).backend_dir == binary.backend_dir
    assert setup.compat and "compatibility backend (Python, model.py) stands in" in setup.describe()
    folder = setup.backend_dir
    assert (folder / "python" / "libtriton_python.so").is_file()
    stub = folder / "python" / "triton_python_backend_stub"
    assert stub.is_file() and os.access(stub, os.X_OK)
    assert (folder / "pytorch" / "model.py").read_bytes() == COMPAT_MODEL_PY.read_bytes()
    assert (folder / COMPAT_BACKEND_NAME / "model.py").read_bytes() == COMPAT_MODEL_PY.read_bytes()
    assert not (folder / "pytorch" / "libtriton_pytorch.so").exists()
    assert prepare_backends(binary, "compat", cache_dir).backend_dir == folder  # cached, not rebuilt


def test_backend_choice_nvidia(binary, cache_dir, nvidia_backend):
    setup = prepare_backends(binary, "nvidia", cache_dir)
    assert not setup.compat and setup.library == nvidia_backend.library
    if setup.origin == "built":
        library = setup.backend_dir / "pytorch" / "libtriton_pytorch.so"
        assert library.resolve() == nvidia_backend.library.resolve() and not (library.parent / "model.py").exists()
        assert (setup.backend_dir / "python" / "libtriton_python.so").is_file()  # the tokenizer model's backend
        assert (setup.backend_dir / COMPAT_BACKEND_NAME / "model.py").is_file()  # torch_aoti on this server
        assert f"pytorch_backend {setup.branch} built from source" in setup.describe()


def test_backend_choice_refused(binary, cache_dir, monkeypatch):
    with pytest.raises(ServerError, match="unknown backend choice 'fast'"):
        prepare_backends(binary, "fast", cache_dir)
    monkeypatch.setenv("TEI_EXPORT_CACHE", str(cache_dir / "empty-cache"))  # no build of NVIDIA's backend there
    if not (binary.backend_dir / "pytorch" / "libtriton_pytorch.so").is_file():
        with pytest.raises(ServerError, match="NVIDIA's LibTorch backend is not available") as err:
            prepare_backends(binary, "nvidia", cache_dir)
        assert "tei-export backend build" in str(err.value)
        auto = prepare_backends(binary, "auto", cache_dir)
        assert auto.compat and "no build of NVIDIA's backend" in auto.describe()


# --------------------------------------------------------------------------------------------------------------
# the compatibility backend's rules, in-process (the server's pure-Python triton_python_backend_utils suffices)
# --------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compat(binary):
    import importlib.util
    import sys

    utils_dir = str(binary.backend_dir / "python")
    require((binary.backend_dir / "python" / "triton_python_backend_utils.py").is_file(),
            f"the server at {binary.path} ships no triton_python_backend_utils.py", part="tritonserver")
    sys.path.insert(0, utils_dir)
    try:
        spec = importlib.util.spec_from_file_location("tei_compat_model_under_test", COMPAT_MODEL_PY)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(utils_dir)
    return module


def test_compat_is_self_contained():
    """model.py and its tei_compat_* siblings import only what the stub's Python has (never the exporter package),
    and every sibling it imports is one that is copied with it."""
    siblings = {p.stem for p in COMPAT_FILES if p != COMPAT_MODEL_PY}
    imported = set()
    for path in COMPAT_FILES:
        imported |= {line.split()[1].split(".")[0] for line in path.read_text().splitlines()
                     if line.startswith(("import ", "from "))}
    assert imported - siblings <= {"json", "os", "re", "sys", "numpy", "torch", "triton_python_backend_utils"}
    assert {name for name in imported if name.startswith("tei_compat")} == siblings


def test_compat_input_matching(compat):
    args = ["input_ids", "attention_mask", "token_type_ids"]
    # every config name is a forward() argument: by name, whatever the config order
    assert compat.match_inputs(["token_type_ids", "input_ids", "attention_mask"], args) == ([2, 0, 1],
                                                                                           "FORWARD_ARGUMENT")
    # <anything>__<index>
    assert compat.match_inputs(["B__1", "A__0", "C__2"], args) == ([1, 0, 2], "NAMED_INDEX")
    # the C++ code reads the index after the FIRST "__": "my__ids__0" has the index text "ids__0", not a number
    assert compat.match_inputs(["my__ids__0", "b__1", "c__2"], args) == ([0, 1, 2], "STRICT_CONFIG_ORDERING")
    assert compat.match_inputs(["c__2", "a__1", "b__"], args) == ([2, 1, 0], "NAMED_INDEX")  # "" reads as 0
    # neither: config order
    assert compat.match_inputs(["ids", "mask", "types"], args) == ([0, 1, 2], "STRICT_CONFIG_ORDERING")
    # batch-input targets take their place after the config inputs, by the same convention
    assert compat.match_inputs(["x"], ["offsets", "x"], batch_targets=["offsets"]) == ([1, 0], "FORWARD_ARGUMENT")
    with pytest.raises(compat.CompatBackendError, match="configuration expects 2 inputs, model provides 3$"):
        compat.match_inputs(["input_ids", "attention_mask"], args)
    with pytest.raises(compat.CompatBackendError, match="index 5"):
        compat.match_inputs(["a__0", "b__5", "c__1"], args)
    # a repeated index loads (as in the C++ backend); the argument left unset fails every request instead
    assert compat.match_inputs(["a__0", "b__0", "c__1"], args) == ([0, 0, 1], "NAMED_INDEX")


def test_compat_output_rules(compat):
    import torch

    assert compat.match_outputs(["OUT__1", "OUT__0"]) == ([1, 0], "NAMED_INDEX")
    assert compat.match_outputs(["embedding", "tokens"]) == ([0, 1], "STRICT_CONFIG_ORDERING")
    x = torch.ones(2, 3)
    assert len(compat.flatten_outputs(x)) == 1 and len(compat.flatten_outputs((x, x))) == 2
    assert compat.flatten_outputs(["a", "b"]) == [["a", "b"]]  # List[str] is an output too
    for bad, needle in (({"y": x}, "List / Dictionary of Tensors"), ([x, x], r"received List\[Tensor\]"),
                        (3.0, "or a Scalar"), ((x, [x]), r"output at index 1 must be of type Tensor or List\[str\]")):
        with pytest.raises(compat.CompatBackendError, match=needle):
            compat.flatten_outputs(bad)


def test_compat_pt2_rules(compat):
    import torch

    # torch_aoti: INPUT__<n> / OUTPUT__<n> name the n-th flattened tensor of the package, in any config order
    assert compat.match_pt2(["INPUT__1", "INPUT__0", "INPUT__2"], 3, "input") == [1, 0, 2]
    assert compat.match_pt2(["OUTPUT__1", "OUTPUT__0"], None, "output") == [1, 0]
    with pytest.raises(compat.CompatBackendError, match="named INPUT__<n>"):
        compat.match_pt2(["input_ids", "attention_mask", "token_type_ids"], 3, "input")
    with pytest.raises(compat.CompatBackendError, match="named OUTPUT__<n>"):
        compat.match_pt2(["INPUT__0"], None, "output")
    with pytest.raises(compat.CompatBackendError, match="configuration expects 2 inputs, the model.pt2 package takes 3"):
        compat.match_pt2(["INPUT__0", "INPUT__1"], 3, "input")
    with pytest.raises(compat.CompatBackendError, match="repeat an index"):
        compat.match_pt2(["INPUT__0", "INPUT__0", "INPUT__1"], 3, "input")
    x = torch.ones(2, 3)
    assert len(compat.flatten_outputs([x, x], pt2=True)) == 2  # a package returns several outputs as a list


def test_compat_parameters(compat):
    # backend_common's ParseBoolValue: these six words in any case, nothing else (not even surrounding spaces)
    for text in ("true", "ON", "1", "True"):
        assert compat.parse_bool("INFERENCE_MODE", text) is True
    for text in ("false", "off", "0"):
        assert compat.parse_bool("INFERENCE_MODE", text) is False
    for text in ("yes", " true"):
        with pytest.raises(compat.CompatBackendError, match=f"failed to convert '{text}' to boolean"):
            compat.parse_bool("INFERENCE_MODE", text)
    # std::stoi: leading spaces and a sign, the digits; the rest is ignored
    assert [compat.parse_int("N", t) for t in ("2", " 4", "3threads", "-1")] == [2, 4, 3, -1]
    with pytest.raises(compat.CompatBackendError, match="failed to convert 'two' to integral number"):
        compat.parse_int("N", "two")
    with pytest.raises(compat.CompatBackendError, match="aborts the whole server"):
        compat.parse_int("N", "99999999999")
    config = {"parameters": {"INTRA_OP_THREAD_COUNT": {"string_value": "2"}}}
    assert compat.read_parameters(config) == {"INTRA_OP_THREAD_COUNT": "2"}
    with pytest.raises(compat.CompatBackendError, match="unsupported datatype TYPE_BF16"):
        compat.torch_dtype("TYPE_BF16", "input 'x'")


def test_compat_batch_inputs(compat):
    import torch

    shapes = [(1, 2), (1, 3), (1, 1)]  # three ragged requests of 2, 3 and 1 elements
    assert compat.batch_input_tensor("BATCH_ELEMENT_COUNT", torch.int32, shapes).tolist() == [2, 3, 1]
    assert compat.batch_input_tensor("BATCH_ACCUMULATED_ELEMENT_COUNT", torch.int32, shapes).tolist() == [2, 5, 6]
    assert compat.batch_input_tensor("BATCH_ACCUMULATED_ELEMENT_COUNT_WITH_ZERO", torch.float32,
                                     shapes).tolist() == [0.0, 2.0, 5.0, 6.0]
    assert compat.batch_input_tensor("BATCH_MAX_ELEMENT_COUNT_AS_SHAPE", torch.int32, shapes).shape == (3,)
    assert compat.batch_input_tensor("BATCH_ITEM_SHAPE", torch.int32, [(2, 4), (1, 3)]).tolist() == [[4], [4], [3]]
    assert compat.batch_input_tensor("BATCH_ITEM_SHAPE_FLATTEN", torch.int32, [(2, 4), (1, 3)]).tolist() == [4, 4, 3]


def test_compat_interop_claim(compat, tmp_path):
    compat.claim_interop_threads(str(tmp_path), "a")
    compat.claim_interop_threads(str(tmp_path), "a")  # another instance of the same model: one ModelState in C++
    with pytest.raises(compat.CompatBackendError, match="cannot set number of interop threads") as err:
        compat.claim_interop_threads(str(tmp_path), "b")
    assert "model 'b' sets INTER_OP_THREAD_COUNT after model 'a' did" in str(err.value)


# --------------------------------------------------------------------------------------------------------------
# serving
# --------------------------------------------------------------------------------------------------------------
def test_server_ready(server, http):
    assert set(server.models) == {"minilm", "pair", "fp16_out", "dict_out", "ragged"}
    assert server.http_url.startswith("127.0.0.1:") and server.grpc_url.startswith("127.0.0.1:")
    assert http.is_server_ready() and http.is_model_ready("minilm")
    assert http.get_server_metadata()["version"] == server.binary.version
    config = http.get_model_config("minilm")
    assert config["backend"] == "pytorch"
    no_fallback_under_ci(server.compat_backend)
    if server.compat_backend:
        assert config.get("runtime") == "model.py"
        assert "tei-export LibTorch compatibility backend" in server.log_text()
        assert server.served_by("minilm") == "compatibility backend (model.py)"
    else:  # NVIDIA's shared library, as its own log line says
        assert config.get("runtime", "") != "model.py"
        assert "TRITONBACKEND_Initialize: pytorch" in server.log_text()
        assert "compatibility backend" not in server.log_text()
        assert server.served_by("minilm").startswith("NVIDIA C++ libtriton_pytorch.so")


def test_http_matches_sentence_transformers(http, st_model):
    enc = fx.tokenize(st_model, fx.SENTENCES)
    got = http.infer("minilm", _inputs(httpclient, enc)).as_numpy("embedding")
    ref = st_model.encode(fx.SENTENCES, convert_to_numpy=True)
    assert got.shape == (3, 384) and got.dtype == np.float32
    assert np.abs(got - ref).max() <= 1e-5


def test_grpc_matches_sentence_transformers(grpc, st_model):
    sentences = fx.SENTENCES[::-1] + ["one more, of yet another length"]
    enc = fx.tokenize(st_model, sentences)
    got = grpc.infer("minilm", _inputs(grpcclient, enc)).as_numpy("embedding")
    ref = st_model.encode(sentences, convert_to_numpy=True)
    assert got.shape == (4, 384)
    assert np.abs(got - ref).max() <= 1e-5


def _stats(url, model, at_least=0):
    """(inference_count, execution_count), waiting (bounded) for ``at_least`` inferences (TritonClient.statistics)."""
    with TritonClient(url, "http") as client:
        return client.statistics(model, at_least=at_least)


def test_concurrent_requests_are_batched(server, http, st_model):
    # the copy of the exported config waits up to 20 ms for a batch to fill (see the server fixture)
    sentences = [f"sentence number {i} for the batcher" for i in range(8)]  # same token count each
    encs = [fx.tokenize(st_model, [s]) for s in sentences]
    assert len({e["input_ids"].shape for e in encs}) == 1
    ref = st_model.encode(sentences, convert_to_numpy=True)
    for _ in range(3):  # bounded: batching depends on timing, three rounds are plenty
        inf0, exe0 = _stats(server.http_url, "minilm")
        pending = [http.async_infer("minilm", _inputs(httpclient, e)) for e in encs]
        got = np.concatenate([p.get_result().as_numpy("embedding") for p in pending])
        assert np.abs(got - ref).max() <= 1e-5
        inf1, exe1 = _stats(server.http_url, "minilm", at_least=inf0 + len(sentences))
        assert inf1 - inf0 == len(sentences)
        if exe1 - exe0 < inf1 - inf0:
            return
    pytest.fail(f"8 concurrent requests never shared an execution (executions {exe1 - exe0})")


def test_ragged_requests_share_an_execution(server):
    # allow_ragged_batch lets the batcher merge requests of different lengths: the backend hands forward() all of
    # their elements as one flat tensor and the end offsets as the batch input; one answer row per request
    client = httpclient.InferenceServerClient(server.http_url, concurrency=6)
    try:
        arrays = [np.arange(n + 1, dtype=np.float32).reshape(1, -1) for n in (1, 2, 1, 3, 2, 1)]
        pending = []
        for array in arrays:
            item = httpclient.InferInput("x", list(array.shape), "FP32")
            item.set_data_from_numpy(array)
            pending.append(client.async_infer("ragged", [item]))
        for array, p in zip(arrays, pending):
            assert p.get_result().as_numpy("s").tolist() == [[float(array.sum())]]
        inf1, exe1 = _stats(server.http_url, "ragged", at_least=len(arrays))
        assert inf1 == len(arrays) and exe1 < inf1, "rows of different lengths should have shared an execute()"
    finally:
        client.close()


def test_index_naming_and_tuple_outputs(http):
    a = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32)
    b = np.array([[1, 1, 1], [2, 2, 2]], dtype=np.float32)
    inputs = []
    for name, array in (("A__0", a), ("B__1", b)):
        item = httpclient.InferInput(name, list(array.shape), "FP32")
        item.set_data_from_numpy(array)
        inputs.append(item)
    result = http.infer("pair", inputs)
    np.testing.assert_array_equal(result.as_numpy("DIFF__0"), a - b)
    np.testing.assert_array_equal(result.as_numpy("DOUBLE__1"), a * 2)


# --------------------------------------------------------------------------------------------------------------
# errors: each one clear, and the next good request still works
# --------------------------------------------------------------------------------------------------------------
def _expect_error(call, *needles):
    with pytest.raises(InferenceServerException) as err:
        call()
    text = str(err.value)
    for needle in needles:
        assert needle.lower() in text.lower(), text
    return text


def test_wrong_dtype(http, st_model):
    enc = {k: v.astype(np.int32) for k, v in fx.tokenize(st_model, fx.SENTENCES[:1]).items()}
    _expect_error(lambda: http.infer("minilm", _inputs(httpclient, enc, "INT32")), "INT32", "INT64")
    _good_request(http, st_model)


def test_wrong_rank(http, st_model):
    enc = {k: v[..., None] for k, v in fx.tokenize(st_model, fx.SENTENCES[:1]).items()}
    _expect_error(lambda: http.infer("minilm", _inputs(httpclient, enc)), "shape")
    _good_request(http, st_model)


def test_missing_input(http, st_model):
    enc = fx.tokenize(st_model, fx.SENTENCES[:1])
    del enc["token_type_ids"]
    _expect_error(lambda: http.infer("minilm", _inputs(httpclient, enc)), "token_type_ids")
    _good_request(http, st_model)


def test_batch_too_large(server, http, st_model):
    limit = fx.config_int((server.model_repository / "minilm" / "config.pbtxt").read_text(), "max_batch_size")
    enc = fx.tokenize(st_model, ["x"] * (limit + 1))
    _expect_error(lambda: http.infer("minilm", _inputs(httpclient, enc)), "batch", str(limit))
    _good_request(http, st_model)


def test_unknown_model(http, grpc, st_model):
    enc = fx.tokenize(st_model, fx.SENTENCES[:1])
    _expect_error(lambda: http.infer("no_such_model", _inputs(httpclient, enc)), "unknown model")
    _expect_error(lambda: grpc.infer("no_such_model", _inputs(grpcclient, enc)), "unknown model")
    _good_request(http, st_model)


def test_output_dtype_mismatch_is_a_request_error(http, grpc):
    x = np.ones((2, 2), dtype=np.float32)
    for module, client in ((httpclient, http), (grpcclient, grpc)):
        item = module.InferInput("x", [2, 2], "FP32")
        item.set_data_from_numpy(x)
        _expect_error(lambda: client.infer("fp16_out", [item]), "TYPE_FP16", "TYPE_FP32", "output 'y'")
    assert http.is_model_ready("fp16_out")  # the stub did not crash


def test_dict_output_is_refused(http, st_model):
    item = httpclient.InferInput("x", [1, 2], "FP32")
    item.set_data_from_numpy(np.ones((1, 2), dtype=np.float32))
    _expect_error(lambda: http.infer("dict_out", [item]), "PyTorch execute failure", "List / Dictionary of Tensors")
    _good_request(http, st_model)


def test_bad_models_fail_to_load(binary, cache_dir, tmp_path):
    repo = tmp_path / "bad"
    fx.write_bad_models(repo)
    srv, text = fx.start_must_fail(repo, binary, cache_dir=cache_dir, startup_timeout=120)
    assert "'bad_args'" in text and "configuration expects 2 inputs, model provides 1" in text
    assert "'bad_param'" in text and "failed to convert 'maybe' to boolean" in text
    assert "\nAt:" not in text  # the stub's traceback is left in the log
    assert str(srv.log_path) in text
    with pytest.raises(ProcessLookupError):  # start() stopped what it had started
        os.killpg(srv.pgid, 0)


def test_unparseable_config_and_missing_version(binary, cache_dir, tmp_path):
    repo = tmp_path / "broken"
    fx.write_unloadable_folders(repo)
    _, text = fx.start_must_fail(repo, binary, cache_dir=cache_dir, startup_timeout=60)
    assert "'garbage'" in text and "failed to read text proto" in text
    assert "'no_version'" in text and "at least one version must be available" in text


def test_pair_parameters_applied(server):
    # both backends log the C++ backend's lines for the parameters they applied
    log = server.log_text()
    assert "Inference Mode is disabled for model instance 'pair'" in log
    assert "Optimized execution is disabled for model instance 'pair'" in log
    assert "Inference Mode is enabled for model instance 'minilm'" in log


def test_missing_repository(binary, tmp_path):
    with pytest.raises(ServerError, match="model repository does not exist"):
        TritonServer(tmp_path / "missing", binary=binary).start()


# --------------------------------------------------------------------------------------------------------------
# stopping (last: it stops the module's server)
# --------------------------------------------------------------------------------------------------------------
def test_stop_leaves_no_process(server):
    pgid = server.pgid
    members = fx.group_members(pgid)
    assert server.pid in members
    if server.compat_backend:  # NVIDIA's backend runs in the server process; the compatibility one in stubs
        assert len(members) >= 2, "the Python backend stubs should run in the server's process group"
    server.stop()
    assert not server.running
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)
    server.stop()  # idempotent
