"""tei-export's LibTorch compatibility backend: a Python-based Triton backend for ``platform: "pytorch_libtorch"``.

Triton runs this file as ``<backend-dir>/pytorch/model.py`` through the Python backend when no
``libtriton_pytorch.so`` is installed (and as ``<backend-dir>/tei_export_compat/model.py`` for torch_aoti models on
servers that refuse that platform). It imitates NVIDIA's C++ LibTorch backend of release r24.10 (the release line of
the bundled tritonserver 2.51.0), which is the truth: the differential tests (tests/test_differential.py) send the
same models and requests to both and compare outputs, load decisions and error texts.

* ``<version>/model.pt`` (or ``default_model_filename``) is loaded with ``torch.jit.load``; KIND_CPU / KIND_MODEL run
  on the CPU, KIND_GPU on ``cuda:<device_id>``.
* inputs: when every config input is a ``forward()`` argument name they match by name; else, when every name has a
  ``__`` followed only by digits (up to the end), by that index (the text after the *first* ``__``, as the C++ code
  reads it); else in config order. The argument count must equal the config input count plus the batch inputs.
  Arguments may be Tensors or Lists (``List[str]`` for TYPE_STRING inputs), or a single ``Dict(str, Tensor)`` keyed
  by the config input names.
* outputs: a Tensor, a ``List[str]``, or a Tuple of those; matched by ``<name>__<index>`` else config order; each
  output's dtype must equal its config ``data_type`` exactly.
* ``parameters``: INFERENCE_MODE, DISABLE_OPTIMIZED_EXECUTION, ENABLE_JIT_PROFILING, ENABLE_JIT_EXECUTOR,
  ENABLE_TENSOR_FUSER, DISABLE_CUDNN, ENABLE_CACHE_CLEANING, ENABLE_WEIGHT_SHARING (no effect: one process per
  instance), INTRA_OP_THREAD_COUNT and INTER_OP_THREAD_COUNT (applied when > 0). Booleans and integers are parsed as
  the C++ code parses them. Like r24.10, a second model that sets INTER_OP_THREAD_COUNT in one server is refused
  (NVIDIA's backend aborts the whole server there): the stubs are separate processes, so the claim is kept in a folder
  the server is given (``$TEI_EXPORT_COMPAT_STATE``).
* a batch of requests is concatenated on dim 0, except inputs with ``allow_ragged_batch``, which arrive as one flat
  tensor of all requests' elements, and ``batch_input`` tensors (element counts, accumulated counts, item shapes)
  computed from the requests as Triton's backend input collector computes them; ``forward()`` runs once and the
  outputs are split back per request on dim 0.

A ``model.pt2`` (torch.export + AOTInductor) is loaded with AOTInductor's package loader, as the C++ backend's pt2
path (release 26.03+) does, and follows that path's naming: inputs are ``INPUT__<n>``, the n-th flattened input of
the package, with the count checked; outputs are ``OUTPUT__<n>``.

Errors are returned per request as ``TritonError``; the stub keeps serving. This file must stay self-contained:
it imports only torch, numpy, json, os, re and ``triton_python_backend_utils`` (never the ``exporter`` package).
"""
import json
import os
import re

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

BACKEND_BANNER = (
    "tei-export LibTorch compatibility backend (Python-based, model.py) is serving this model; "
    "it is not NVIDIA's libtriton_pytorch.so"
)
STATE_ENV = "TEI_EXPORT_COMPAT_STATE"
INTEROP_ERROR = ("Error: cannot set number of interop threads after parallel work has started or "
                 "set_num_interop_threads called")

_TORCH_TYPES = {
    "TYPE_BOOL": torch.bool,
    "TYPE_UINT8": torch.uint8,
    "TYPE_INT8": torch.int8,
    "TYPE_INT16": torch.int16,
    "TYPE_INT32": torch.int32,
    "TYPE_INT64": torch.int64,
    "TYPE_FP16": torch.float16,
    "TYPE_FP32": torch.float32,
    "TYPE_FP64": torch.float64,
}
_TRITON_NAMES = {v: k for k, v in _TORCH_TYPES.items()}
STRING = "TYPE_STRING"
_BATCH_INPUT_TYPES = {"TYPE_INT32": torch.int32, "TYPE_FP32": torch.float32}


class CompatBackendError(Exception):
    """A model or request that the LibTorch contract does not allow."""

    def __init__(self, message, code="INVALID_ARG"):
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------------------------------------------------
# Pure helpers (no Triton objects): config parsing and name matching, as the C++ backend does them.
# ---------------------------------------------------------------------------------------------------------------
def parse_bool(name, value):
    """true/on/1 and false/off/0, any case, nothing else (no surrounding spaces), as backend_common's ParseBoolValue."""
    text = str(value).lower()
    if text in ("true", "on", "1"):
        return True
    if text in ("false", "off", "0"):
        return False
    raise CompatBackendError(f"failed to convert '{value}' to boolean")


def parse_int(name, value):
    """An integer as ``std::stoi`` reads it: leading spaces and a sign, then digits; anything after is ignored."""
    match = re.match(r"\s*([+-]?\d+)", str(value))
    if match is None:
        raise CompatBackendError(f"failed to convert '{value}' to integral number")
    number = int(match.group(1))
    if not -2**31 <= number < 2**31:  # std::out_of_range, which the C++ backend does not catch: the server aborts
        raise CompatBackendError(f"parameter {name}='{value}' is out of the int range; NVIDIA's backend aborts the "
                                 "whole server on it (std::out_of_range from stoi)")
    return number


def read_parameters(config):
    """Return ``{KEY: string_value}`` from a model config dict."""
    params = {}
    for key, value in (config.get("parameters") or {}).items():
        if isinstance(value, dict):
            value = value.get("string_value", "")
        params[key] = str(value)
    return params


def torch_dtype(type_name, where):
    try:
        return _TORCH_TYPES[type_name]
    except KeyError:
        raise CompatBackendError(f"unsupported datatype {type_name} for {where}", "INTERNAL") from None


def triton_type_name(dtype):
    return _TRITON_NAMES.get(dtype, str(dtype))


def _index_of(name):
    """The index in ``<name>__<index>`` as the C++ backend reads it (text after the first ``__``, all digits, atoi:
    an empty index is 0), or None when the name does not follow that convention."""
    start = name.find("__")
    if start == -1:
        return None
    tail = name[start + 2:]
    if not all(c.isdigit() for c in tail):
        return None
    return int(tail) if tail else 0


def naming_convention(config_names, arg_names):
    """FORWARD_ARGUMENT (inputs only: every name is an argument), NAMED_INDEX or STRICT_CONFIG_ORDERING."""
    if arg_names is not None and all(name in arg_names for name in config_names):
        return "FORWARD_ARGUMENT"
    if all(_index_of(name) is not None for name in config_names):
        return "NAMED_INDEX"
    return "STRICT_CONFIG_ORDERING"


def match_inputs(config_names, arg_names, model_name="model", batch_targets=()):
    """Map each config input (and then each batch-input target) to a ``forward()`` argument position.

    Returns ``(positions, convention)``; ``positions[i]`` is the argument position of the i-th name of
    ``config_names + batch_targets``. Duplicate or missing positions are not refused here, as in the C++ backend: the
    argument left unset then fails every request in ``forward()``.
    """
    expected = len(config_names) + len(batch_targets)
    if len(arg_names) != expected:
        raise CompatBackendError(
            f"unable to load model '{model_name}', configuration expects {expected} inputs, "
            f"model provides {len(arg_names)}"
        )
    if not config_names:
        raise CompatBackendError("model configuration must contain at least one input, none were specified.",
                                 "INTERNAL")
    convention = naming_convention(config_names, arg_names)
    positions = []
    for i, name in enumerate(list(config_names) + list(batch_targets)):
        if convention == "FORWARD_ARGUMENT":
            positions.append(arg_names.index(name) if name in arg_names else None)
        elif convention == "NAMED_INDEX":
            index = _index_of(name)
            positions.append(index if index is not None else i)
        else:
            positions.append(i)
    for name, position in zip(list(config_names) + list(batch_targets), positions):
        if position is not None and position >= len(arg_names):  # C++: a write past its argument vector
            raise CompatBackendError(
                f"model '{model_name}': input '{name}' has index {position}, but forward() takes only "
                f"{len(arg_names)} inputs (indices 0..{len(arg_names) - 1})")
    return positions, convention


def match_outputs(config_names):
    """Position of each config output in the model's returned tuple (``<name>__<index>``, else config order)."""
    if not config_names:
        raise CompatBackendError("model configuration must contain at least one output, none were specified.",
                                 "INTERNAL")
    convention = naming_convention(config_names, None)
    if convention == "NAMED_INDEX":
        return [_index_of(name) for name in config_names], convention
    return list(range(len(config_names))), convention


def match_pt2(config_names, count, kind, model_name="model"):
    """Positions of a torch_aoti model's config tensors: each must be named ``INPUT__<n>`` / ``OUTPUT__<n>`` (the n-th
    flattened input or output of the package). ``count`` is the package's input count (checked like the C++
    backend does), or None for outputs, whose count is known only at run time."""
    prefix = "INPUT" if kind == "input" else "OUTPUT"
    indices = [_index_of(name) for name in config_names]
    if any(i is None for i in indices) or any(name.rpartition("__")[0] != prefix for name in config_names):
        raise CompatBackendError(
            f"model '{model_name}' is a torch_aoti (model.pt2) model, whose {kind}s are named {prefix}__<n> "
            f"(the n-th {kind} of the package), but the configuration names {config_names}; rename them "
            f"{prefix}__0, {prefix}__1, ..."
        )
    if count is not None and len(config_names) != count:
        raise CompatBackendError(
            f"unable to load model '{model_name}', configuration expects {len(config_names)} {kind}s, "
            f"the model.pt2 package takes {count}"
        )
    if len(set(indices)) != len(indices):
        raise CompatBackendError(
            f"model '{model_name}': {kind} names {config_names} repeat an index; each <name>__<index> must be distinct"
        )
    limit = count if count is not None else max(indices) + 1
    for name, index in zip(config_names, indices):
        if index >= limit:
            raise CompatBackendError(f"model '{model_name}': {kind} '{name}' has index {index}, but the package "
                                     f"takes only {limit} {kind}s")
    return indices


def _is_string_list(value):
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def flatten_outputs(result, pt2=False):
    """What ``forward()`` returned -> list of outputs, refused like the C++ backend refuses it (its texts)."""
    if isinstance(result, tuple) or (pt2 and isinstance(result, list)):
        items = list(result)
        for i, item in enumerate(items):
            if isinstance(item, list) and not _is_string_list(item):
                kind = type(item[0]).__name__ if item else "Tensor"
                raise CompatBackendError(f"output at index {i} must be of type Tensor or List[str], "
                                         f"received List[{kind}]", "INTERNAL")
            if not isinstance(item, (torch.Tensor, list)):
                raise CompatBackendError(f"Expected Tensor but got {type(item).__name__}", "INTERNAL")
        return items
    if isinstance(result, torch.Tensor) or _is_string_list(result):
        return [result]
    if isinstance(result, list):
        kind = type(result[0]).__name__ if result else "Tensor"
        raise CompatBackendError(f"output must be of type Tensor or List[str], received List[{kind}]", "INTERNAL")
    raise CompatBackendError(
        "output must be of type Tensor, List[str] or Tuple containing one of these two types. It should not be a "
        "List / Dictionary of Tensors or a Scalar", "INTERNAL")


def batch_input_tensor(kind, dtype, shapes):
    """A ``batch_input`` tensor from the source input's shape in each request (``shapes``), as Triton's
    BackendInputCollector fills it."""
    counts = [_numel(s) for s in shapes]
    if kind == "BATCH_ELEMENT_COUNT":
        values = counts
    elif kind == "BATCH_ACCUMULATED_ELEMENT_COUNT":
        values = _accumulate(counts)
    elif kind == "BATCH_ACCUMULATED_ELEMENT_COUNT_WITH_ZERO":
        values = [0] + _accumulate(counts)
    elif kind == "BATCH_MAX_ELEMENT_COUNT_AS_SHAPE":  # only its shape carries meaning; the C++ buffer is unset
        return torch.zeros(max(counts), dtype=dtype)
    elif kind in ("BATCH_ITEM_SHAPE", "BATCH_ITEM_SHAPE_FLATTEN"):
        rows = [list(s[1:]) for s in shapes for _ in range(s[0])]
        tensor = torch.tensor(rows, dtype=dtype).reshape(len(rows), len(shapes[0]) - 1)
        return tensor.flatten() if kind.endswith("FLATTEN") else tensor
    else:
        raise CompatBackendError("unsupported BatchInputKind received", "INTERNAL")
    return torch.tensor(values, dtype=dtype)


def _numel(shape):
    count = 1
    for dim in shape:
        count *= dim
    return count


def _accumulate(values):
    total, out = 0, []
    for value in values:
        total += value
        out.append(total)
    return out


def claim_interop_threads(state_dir, model_name):
    """Record that ``model_name`` sets the process-wide inter-op thread count; refuse a second model, as r24.10 does
    (its second ``set_num_interop_threads`` aborts the server). ``state_dir`` is shared by the server's stubs."""
    os.makedirs(state_dir, exist_ok=True)
    path = os.path.join(state_dir, "interop-threads-set-by")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        with open(path, encoding="utf-8") as handle:
            owner = handle.read().strip()
        if owner and owner != model_name:
            raise CompatBackendError(
                f"{INTEROP_ERROR} (model '{model_name}' sets INTER_OP_THREAD_COUNT after model '{owner}' did: "
                "NVIDIA's LibTorch backend before release 25.11 aborts the whole server here; remove "
                "INTER_OP_THREAD_COUNT from all models but one)", "INTERNAL") from None
        return
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(model_name)


def _default_state_dir():
    """Without tei-export's server: a folder named after the parent tritonserver process and its start time."""
    parent = os.getppid()
    try:
        with open(f"/proc/{parent}/stat", encoding="utf-8") as handle:
            started = handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        started = "0"
    return os.path.join("/tmp", f"tei-export-compat-state-{parent}-{started}")


# ---------------------------------------------------------------------------------------------------------------
# The Triton model
# ---------------------------------------------------------------------------------------------------------------
def _log_info(message):
    try:
        pb_utils.Logger.log_info(message)
    except Exception:  # older stubs without Logger
        print(message, flush=True)


def _log_warn(message):
    try:
        pb_utils.Logger.log_warn(message)
    except Exception:
        print(message, flush=True)


def _triton_error(message, code="INVALID_ARG"):
    try:
        return pb_utils.TritonError(message, getattr(pb_utils.TritonError, code))
    except Exception:
        return pb_utils.TritonError(message)


class TritonPythonModel:
    """One instance per Triton model instance (its own stub process)."""

    def initialize(self, args):
        self.config = json.loads(args["model_config"])
        self.name = args.get("model_name", self.config.get("name", "model"))
        _log_info(f"{BACKEND_BANNER} (model '{self.name}')")

        self.max_batch_size = int(self.config.get("max_batch_size", 0) or 0)
        self._read_parameters(read_parameters(self.config))
        self.device = self._pick_device(args)

        filename = self.config.get("default_model_filename") or "model.pt"
        path = os.path.join(args["model_repository"], str(args.get("model_version", "1")), filename)
        if not os.path.isfile(path):
            raise CompatBackendError(f"unable to find '{path}' for model instance '{self.name}'", "UNAVAILABLE")
        self.pt2 = filename.endswith(".pt2")
        if self.pt2:
            self.module, package_inputs = self._load_pt2(path)
        else:
            try:
                # the bytes through a stream, as the C++ backend reads the file into a string and loads it from an
                # istringstream: torch then says what NVIDIA's says about a broken file (an empty one reads
                # "istream reader failed", not the file reader's "not a ZIP archive")
                with open(path, "rb") as handle:  # a file object: torch.jit.load reads it into one buffer
                    self.module = torch.jit.load(handle, map_location=self.device)
            except Exception as err:
                raise CompatBackendError(f"failed to load model '{self.name}': {err}", "INTERNAL") from err
            self.module.eval()

        self.inputs = []  # (name, torch dtype or STRING, ragged)
        for cfg in self.config.get("input", []):
            kind = cfg.get("data_type")
            dtype = STRING if kind == STRING else torch_dtype(kind, f"input '{cfg['name']}' for model '{self.name}'")
            self.inputs.append((cfg["name"], dtype, bool(cfg.get("allow_ragged_batch"))))
        self.outputs = []
        for cfg in self.config.get("output", []):
            kind = cfg.get("data_type")
            dtype = STRING if kind == STRING else torch_dtype(kind, f"output '{cfg['name']}' for model '{self.name}'")
            self.outputs.append((cfg["name"], dtype))
        self.batch_inputs = []  # (target name, kind, torch dtype, source input)
        for cfg in self.config.get("batch_input", []):
            kind, data_type = cfg.get("kind"), cfg.get("data_type")
            if data_type not in _BATCH_INPUT_TYPES:  # refused by Triton's core before a backend sees it
                raise CompatBackendError(f"batch input data type {data_type} is not supported", "INVALID_ARG")
            for target in cfg.get("target_name", []):
                self.batch_inputs.append((target, kind, _BATCH_INPUT_TYPES[data_type], cfg.get("source_input", [""])[0]))

        in_names, out_names = [n for n, _, _ in self.inputs], [n for n, _ in self.outputs]
        self.dict_input, self.arg_names = False, []
        if self.pt2:
            self.input_positions = match_pt2(in_names, package_inputs, "input", self.name)
            self.output_positions = match_pt2(out_names, None, "output", self.name)
            in_conv = out_conv = "PT2_ORDINAL (AOTInductor package)"
        else:
            arg_names, self.dict_input = self._forward_arguments()
            self.arg_names = arg_names
            if self.dict_input:
                self.input_positions, in_conv = [None] * len(in_names), "DICT (Dict(str, Tensor) argument)"
            else:
                self.input_positions, in_conv = match_inputs(in_names, arg_names, self.name,
                                                             [t for t, _, _, _ in self.batch_inputs])
            self.output_positions, out_conv = match_outputs(out_names)
        _log_info(f"model '{self.name}': {path} on {self.device}, inputs by {in_conv}, outputs by {out_conv}, "
                  f"intra_op_threads={torch.get_num_threads()}")

    # -- setup ------------------------------------------------------------------------------------------------
    def _read_parameters(self, params):
        def flag(key, default):
            return parse_bool(key, params[key]) if key in params else default

        self.inference_mode = flag("INFERENCE_MODE", True)
        self.disable_optimized = flag("DISABLE_OPTIMIZED_EXECUTION", False)
        self.cache_cleaning = flag("ENABLE_CACHE_CLEANING", False)
        disable_cudnn = flag("DISABLE_CUDNN", False)
        # the same log lines as the C++ backend, so the server log reads alike on both
        _log_info(f"Optimized execution is {'disabled' if self.disable_optimized else 'enabled'} for model instance "
                  f"'{self.name}'")
        _log_info(f"Inference Mode is {'enabled' if self.inference_mode else 'disabled'} for model instance "
                  f"'{self.name}'")
        if flag("ENABLE_WEIGHT_SHARING", False):
            _log_warn("ENABLE_WEIGHT_SHARING has no effect in the compatibility backend (one process per instance)")

        # As in the C++ backend: graph-executor optimisation follows DISABLE_OPTIMIZED_EXECUTION; the JIT switches
        # change torch's defaults only when the parameter is given.
        torch._C._set_graph_executor_optimize(not self.disable_optimized)
        if "ENABLE_JIT_PROFILING" in params:
            torch._C._jit_set_profiling_mode(flag("ENABLE_JIT_PROFILING", True))
        if "ENABLE_JIT_EXECUTOR" in params:
            torch._C._jit_set_profiling_executor(flag("ENABLE_JIT_EXECUTOR", True))
        if "ENABLE_TENSOR_FUSER" in params:
            torch._C._jit_set_texpr_fuser_enabled(flag("ENABLE_TENSOR_FUSER", True))
        torch.backends.cudnn.enabled = not disable_cudnn

        intra = parse_int("INTRA_OP_THREAD_COUNT", params["INTRA_OP_THREAD_COUNT"]) \
            if "INTRA_OP_THREAD_COUNT" in params else -1
        if intra > 0:
            torch.set_num_threads(intra)
            _log_info(f"Intra op thread count is set to {intra} for model instance '{self.name}'")
        inter = parse_int("INTER_OP_THREAD_COUNT", params["INTER_OP_THREAD_COUNT"]) \
            if "INTER_OP_THREAD_COUNT" in params else -1
        if inter > 0:
            claim_interop_threads(os.environ.get(STATE_ENV) or _default_state_dir(), self.name)
            try:
                torch.set_num_interop_threads(inter)
            except RuntimeError:  # this stub already ran inter-op work; the claim above is what r24.10 enforces
                pass
            _log_info(f"Inter op thread count is set to {inter} for model instance '{self.name}'")

    def _pick_device(self, args):
        kind = str(args.get("model_instance_kind", "CPU")).upper()
        if kind != "GPU":
            return torch.device("cpu")
        if not torch.cuda.is_available():
            raise CompatBackendError(
                f"model '{self.name}' asks for instance_group kind KIND_GPU, but this torch has no usable CUDA "
                "device; use KIND_CPU or install a CUDA build of torch"
            )
        return torch.device(f"cuda:{int(args.get('model_instance_device_id', 0) or 0)}")

    def _load_pt2(self, path):
        """AOTInductor's package loader (what the C++ pt2 path uses) and the package's flattened input count."""
        import torch.utils._pytree as pytree

        index = self.device.index if self.device.type == "cuda" else -1  # _pick_device gives cuda:<n>
        try:
            module = torch._inductor.aoti_load_package(path, device_index=index)
            in_spec = pytree.treespec_loads(module.loader.get_call_spec()[0])
        except Exception as err:
            raise CompatBackendError(f"failed to load the AOTInductor package '{path}': {err}") from err
        return module, in_spec.num_leaves

    def _forward_arguments(self):
        """(argument names, whether forward() takes a single Dict(str, Tensor)), checked as the C++ backend does."""
        try:
            schema = self.module.forward.schema
        except AttributeError as err:
            raise CompatBackendError(f"model '{self.name}' has no TorchScript forward() method") from err
        arguments = list(schema.arguments)
        if arguments and arguments[0].name == "self":
            arguments = arguments[1:]
        kinds = [a.type.kind() for a in arguments]
        if len(arguments) == 1 and kinds[0] == "DictType":
            return [arguments[0].name], True
        if "DictType" in kinds[1:]:
            raise CompatBackendError("Multiple inputs of kind DictType were detected. Only a single input of type "
                                     "Dict(str, Tensor) is supported.", "INTERNAL")
        for arg, kind in zip(arguments, kinds):
            if kind not in ("TensorType", "ListType"):
                raise CompatBackendError(
                    f"An input of type '{arg.type}' was detected in the model. Only a single input of type "
                    "Dict(str, Tensor) or input(s) of type Tensor are supported.", "INTERNAL")
        return [a.name for a in arguments], False

    # -- inference --------------------------------------------------------------------------------------------
    def _request_inputs(self, request):
        """This request's inputs in config order (Tensors, or lists of str for TYPE_STRING)."""
        values = []
        for name, dtype, _ in self.inputs:
            pb_tensor = pb_utils.get_input_tensor_by_name(request, name)
            if pb_tensor is None:  # Triton's core refuses such a request before a backend sees it
                raise CompatBackendError(f"expected {len(self.inputs)} inputs but got fewer; '{name}' is missing")
            if dtype == STRING:
                array = pb_tensor.as_numpy()
                values.append([v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                               for v in array.reshape(-1)])
                continue
            values.append(torch.utils.dlpack.from_dlpack(pb_tensor.to_dlpack()))
        return values

    def _batch_sizes(self, per_request):
        if self.max_batch_size == 0:
            return [1] * len(per_request)
        return [len(v[0]) if isinstance(v[0], list) else int(v[0].shape[0]) for v in per_request]

    def _gather(self, per_request):
        """One forward() argument per config input and batch input, from all requests of the execution."""
        values = []
        for k, (name, dtype, ragged) in enumerate(self.inputs):
            parts = [request[k] for request in per_request]
            if dtype == STRING:
                values.append([s for part in parts for s in part])
            elif ragged:
                values.append(torch.cat([p.reshape(-1) for p in parts]))
            elif len(parts) == 1:
                values.append(parts[0])
            else:
                values.append(torch.cat(parts, dim=0))
        names = [n for n, _, _ in self.inputs]
        for _, kind, dtype, source in self.batch_inputs:
            k = names.index(source)
            values.append(batch_input_tensor(kind, dtype, [tuple(request[k].shape) for request in per_request]))
        return values

    def _forward(self, values):
        values = [v.to(self.device) if isinstance(v, torch.Tensor) and v.device != self.device else v
                  for v in values]
        if self.dict_input:
            args = [{name: value for (name, _, _), value in zip(self.inputs, values)}]
        else:
            args = [None] * len(values)
            for position, value in zip(self.input_positions, values):
                if position is not None:
                    args[position] = value
            unset = [name for name, arg in zip(self.arg_names, args) if arg is None]
            if unset:  # two config inputs named the same index: TorchScript's own words for the unset argument
                raise CompatBackendError(f"PyTorch execute failure: forward() Expected a value of type 'Tensor' for "
                                         f"argument '{unset[0]}' but instead found type 'NoneType'.", "INTERNAL")
        guard = torch.inference_mode() if self.inference_mode else torch.no_grad()
        try:
            with guard:
                result = self.module(*args)
        except Exception as err:
            raise CompatBackendError(f"PyTorch execute failure: {err}", "INTERNAL") from err
        try:
            items = flatten_outputs(result, self.pt2)
        except CompatBackendError as err:
            raise CompatBackendError(f"PyTorch execute failure: {err}", err.code) from None
        outputs = []
        for (name, dtype), index in zip(self.outputs, self.output_positions):
            if index is None or index >= len(items):
                raise CompatBackendError(
                    f"The output {name} in the model configuration refers to an output index which doesn't exist. "
                    f"This model has {len(items)} outputs")
            out = items[index]
            if isinstance(out, torch.Tensor) and out.dim() == 0:
                raise CompatBackendError(f"output '{name}' is a scalar which is not supported.")
            if isinstance(out, torch.Tensor) and out.dtype != dtype:
                raise CompatBackendError(
                    f"configuration expects datatype {triton_type_name(dtype) if dtype != STRING else STRING} for "
                    f"output '{name}', model provides {triton_type_name(out.dtype)}")
            outputs.append((name, out))
        return outputs

    @staticmethod
    def _to_pb(name, value):
        if isinstance(value, list):
            return pb_utils.Tensor(name, np.array([s.encode("utf-8") for s in value], dtype=np.object_))
        if value.device.type == "cpu":
            return pb_utils.Tensor(name, value.detach().contiguous().numpy())
        return pb_utils.Tensor.from_dlpack(name, torch.utils.dlpack.to_dlpack(value.detach().contiguous()))

    def execute(self, requests):
        responses = [None] * len(requests)
        ok = []
        for i, request in enumerate(requests):
            try:
                ok.append((i, self._request_inputs(request)))
            except Exception as err:
                code = err.code if isinstance(err, CompatBackendError) else "INTERNAL"
                responses[i] = pb_utils.InferenceResponse(error=_triton_error(str(err), code))
        # without batching each request is its own execution; with it, every request of this call runs in one
        # forward() as the C++ backend does (Triton's batcher only merges requests it allows to be merged)
        groups = [[item] for item in ok] if self.max_batch_size == 0 else ([ok] if ok else [])
        for members in groups:
            try:
                self._run(members, responses)
            except Exception as err:
                code = err.code if isinstance(err, CompatBackendError) else "INTERNAL"
                for i, _ in members:
                    responses[i] = pb_utils.InferenceResponse(error=_triton_error(str(err), code))
        if self.cache_cleaning and self.device.type == "cuda":
            torch.cuda.empty_cache()
        return responses

    def _run(self, members, responses):
        per_request = [values for _, values in members]
        sizes = self._batch_sizes(per_request)
        total = sum(sizes)
        if total != 1 and self.max_batch_size > 0 and total > self.max_batch_size:
            raise CompatBackendError(f"batch size {total} for '{self.name}', max allowed is {self.max_batch_size}",
                                     "INTERNAL")
        outputs = self._forward(self._gather(per_request))
        if len(members) == 1:
            responses[members[0][0]] = pb_utils.InferenceResponse(
                output_tensors=[self._to_pb(n, t) for n, t in outputs])
            return
        for name, value in outputs:
            rows = len(value) if isinstance(value, list) else int(value.shape[0]) if value.dim() else 0
            if rows != total:
                raise CompatBackendError(
                    f"output '{name}' has {rows} rows for a batch of {total}; with max_batch_size > 0 every output "
                    "must keep the batch dimension first", "INTERNAL")
        starts = _accumulate([0] + sizes[:-1])
        for (i, _), start, size in zip(members, starts, sizes):
            responses[i] = pb_utils.InferenceResponse(
                output_tensors=[self._to_pb(name, value[start:start + size]) for name, value in outputs])

    def finalize(self):
        self.module = None
