"""tei-export's LibTorch compatibility backend: a Python-based Triton backend for ``platform: "pytorch_libtorch"``.

Triton runs this file as ``<backend-dir>/pytorch/model.py`` through the Python backend when no
``libtriton_pytorch.so`` is installed. It follows the C++ LibTorch backend's contract as far as exported
TorchScript models touch it:

* ``<version>/model.pt`` (or ``default_model_filename``) is loaded with ``torch.jit.load`` and put in eval mode;
  KIND_CPU / KIND_MODEL run on the CPU, KIND_GPU on ``cuda:<device_id>``.
* inputs are matched to ``forward()`` arguments by name when every config input is an argument name, else by
  ``<name>__<index>``, else in config order; the argument count must equal the config input count.
* outputs must be a Tensor or a Tuple of Tensors; they are matched by ``<name>__<index>`` else in config order,
  and each output's dtype must equal its config ``data_type`` exactly.
* ``parameters``: INFERENCE_MODE, DISABLE_OPTIMIZED_EXECUTION, ENABLE_JIT_PROFILING, ENABLE_JIT_EXECUTOR,
  DISABLE_CUDNN, ENABLE_CACHE_CLEANING, ENABLE_WEIGHT_SHARING (no effect: one process per instance),
  INTRA_OP_THREAD_COUNT, INTER_OP_THREAD_COUNT. Unlike the C++ backend, the thread counts apply per model
  instance (each instance is its own stub process), not to the whole server.
* a batch of requests is concatenated on dim 0 (requests whose non-batch shapes differ run in separate groups),
  ``forward()`` runs once per group and the outputs are split back per request.

A ``model.pt2`` (torch.export + AOTInductor, Triton's ``platform: "torch_aoti"``) is loaded with AOTInductor's
package loader, as the C++ backend's pt2 path does, and follows that path's naming: inputs are ``INPUT__<n>``, the
n-th flattened input of the package, with the count checked; outputs are ``OUTPUT__<n>``. tei-export presents such a
model to servers older than 26.03 as ``backend: "pytorch"`` with ``default_model_filename: "model.pt2"``.

Errors are returned per request as ``TritonError``; the stub keeps serving. This file must stay self-contained:
it imports only torch, json, os and ``triton_python_backend_utils`` (never the ``exporter`` package).
"""
import json
import os

import torch
import triton_python_backend_utils as pb_utils

BACKEND_BANNER = (
    "tei-export LibTorch compatibility backend (Python-based, model.py) is serving this model; "
    "it is not NVIDIA's libtriton_pytorch.so"
)

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

_TRUE = ("true", "on", "1")
_FALSE = ("false", "off", "0")


class CompatBackendError(Exception):
    """A model or request that the LibTorch contract does not allow."""


# ---------------------------------------------------------------------------------------------------------------
# Pure helpers (no Triton objects): config parsing and name matching.
# ---------------------------------------------------------------------------------------------------------------
def parse_bool(name, value):
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise CompatBackendError(
        f"parameter {name}='{value}' is not a boolean; use one of true/false/on/off/1/0"
    )


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
        raise CompatBackendError(
            f"{where} has data_type {type_name}, which the LibTorch backend does not support here; "
            f"use one of {', '.join(_TORCH_TYPES)}"
        ) from None


def triton_type_name(dtype):
    return _TRITON_NAMES.get(dtype, str(dtype))


def _named_indices(names):
    """Indices from ``<anything>__<index>`` names, or None when a name does not follow that form."""
    indices = []
    for name in names:
        _, sep, tail = name.rpartition("__")
        if not sep or not tail or not (tail.isascii() and tail.isdigit()):
            return None
        indices.append(int(tail))
    return indices


def match_inputs(config_names, arg_names, model_name="model"):
    """Map each config input to a ``forward()`` argument position, as the C++ LibTorch backend does.

    Returns ``(positions, convention)``: ``positions[i]`` is the argument position of ``config_names[i]``;
    ``convention`` is ``"FORWARD_ARGUMENT"``, ``"NAMED_INDEX"`` or ``"STRICT_CONFIG_ORDERING"``.
    """
    if len(arg_names) != len(config_names):
        raise CompatBackendError(
            f"unable to load model '{model_name}', configuration expects {len(config_names)} inputs, "
            f"model provides {len(arg_names)} (forward({', '.join(arg_names)}))"
        )
    if config_names and all(name in arg_names for name in config_names):
        return [arg_names.index(name) for name in config_names], "FORWARD_ARGUMENT"
    indices = _named_indices(config_names)
    if indices is not None:
        _check_indices(indices, len(arg_names), config_names, "input", model_name)
        return indices, "NAMED_INDEX"
    return list(range(len(config_names))), "STRICT_CONFIG_ORDERING"


def match_outputs(config_names, model_name="model"):
    """Position of each config output in the model's returned tuple (``<name>__<index>``, else config order)."""
    indices = _named_indices(config_names)
    if indices is not None and config_names:
        if len(set(indices)) != len(indices):
            raise CompatBackendError(
                f"model '{model_name}': output names {config_names} repeat an index; "
                "each <name>__<index> must use a distinct index"
            )
        return indices, "NAMED_INDEX"
    return list(range(len(config_names))), "STRICT_CONFIG_ORDERING"


def match_pt2(config_names, count, kind, model_name="model"):
    """Positions of a torch_aoti model's config tensors: each must be named ``INPUT__<n>`` / ``OUTPUT__<n>`` (the n-th
    flattened input or output of the package). ``count`` is the package's input count (checked like the C++
    backend does), or None for outputs, whose count is known only at run time."""
    prefix = "INPUT" if kind == "input" else "OUTPUT"
    indices = _named_indices(config_names)
    if indices is None or any(name.rpartition("__")[0] != prefix for name in config_names):
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
    _check_indices(indices, count if count is not None else max(indices) + 1, config_names, kind, model_name)
    return indices


def _check_indices(indices, count, names, kind, model_name):
    if len(set(indices)) != len(indices):
        raise CompatBackendError(
            f"model '{model_name}': {kind} names {names} repeat an index; each <name>__<index> must be distinct"
        )
    for name, index in zip(names, indices):
        if index >= count:
            raise CompatBackendError(
                f"model '{model_name}': {kind} '{name}' has index {index}, but forward() takes only {count} "
                f"{kind}s (indices 0..{count - 1})"
            )


def flatten_outputs(result, pt2=False):
    """A Tensor or a Tuple of Tensors -> list of Tensors; anything else is refused like the C++ backend does.
    A pt2 package's outputs come back flattened, as a list when there are several."""
    if isinstance(result, torch.Tensor):
        items = [result]
    elif isinstance(result, tuple) or (pt2 and isinstance(result, list)):
        items = list(result)
    else:
        kind = type(result).__name__
        raise CompatBackendError(
            f"model returned a {kind}; the LibTorch backend accepts only a Tensor or a Tuple of Tensors "
            "(not a dict, a list or a scalar). Return a tuple from forward()"
        )
    for i, item in enumerate(items):
        if not isinstance(item, torch.Tensor):
            raise CompatBackendError(
                f"model output {i} is a {type(item).__name__}; the LibTorch backend accepts only a Tensor or a "
                "Tuple of Tensors"
            )
        if item.dim() == 0:
            raise CompatBackendError(
                f"model output {i} is a 0-dim scalar tensor; the LibTorch backend needs at least one dimension"
            )
    return items


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


def _triton_error(message):
    try:
        return pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG)
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
        model_dir = args["model_repository"]
        version = str(args.get("model_version", "1"))
        path = os.path.join(model_dir, version, filename)
        if not os.path.isfile(path):
            raise CompatBackendError(
                f"unable to find '{path}' for model '{self.name}'; export the TorchScript file there or set "
                "default_model_filename"
            )
        self.pt2 = filename.endswith(".pt2")
        if self.pt2:
            self.module, package_inputs = self._load_pt2(path)
        else:
            try:
                self.module = torch.jit.load(path, map_location=self.device)
            except Exception as err:
                raise CompatBackendError(f"failed to load TorchScript model '{path}': {err}") from err
            self.module.eval()

        self.inputs = []
        for cfg in self.config.get("input", []):
            self.inputs.append((cfg["name"], torch_dtype(cfg.get("data_type"), f"input '{cfg['name']}'")))
        self.outputs = []
        for cfg in self.config.get("output", []):
            self.outputs.append((cfg["name"], torch_dtype(cfg.get("data_type"), f"output '{cfg['name']}'")))

        in_names, out_names = [n for n, _ in self.inputs], [n for n, _ in self.outputs]
        if self.pt2:
            self.input_positions = match_pt2(in_names, package_inputs, "input", self.name)
            self.output_positions = match_pt2(out_names, None, "output", self.name)
            in_conv = out_conv = "PT2_ORDINAL (AOTInductor package)"
        else:
            arg_names = self._forward_arguments()
            self.input_positions, in_conv = match_inputs(in_names, arg_names, self.name)
            self.output_positions, out_conv = match_outputs(out_names, self.name)
        _log_info(
            f"model '{self.name}': {path} on {self.device}, inputs by {in_conv}, outputs by {out_conv}, "
            f"inference_mode={self.inference_mode}, optimized_execution={not self.disable_optimized}, "
            f"intra_op_threads={torch.get_num_threads()}"
        )

    # -- setup ------------------------------------------------------------------------------------------------
    def _read_parameters(self, params):
        def flag(key, default):
            return parse_bool(key, params[key]) if key in params else default

        def count(key):
            if key not in params:
                return 0
            try:
                value = int(params[key])
            except ValueError:
                raise CompatBackendError(f"parameter {key}='{params[key]}' is not an integer") from None
            if value < 0:
                raise CompatBackendError(f"parameter {key}={value} must be >= 0")
            return value

        self.inference_mode = flag("INFERENCE_MODE", True)
        self.disable_optimized = flag("DISABLE_OPTIMIZED_EXECUTION", False)
        self.cache_cleaning = flag("ENABLE_CACHE_CLEANING", False)
        disable_cudnn = flag("DISABLE_CUDNN", False)
        if flag("ENABLE_WEIGHT_SHARING", False):
            _log_warn("ENABLE_WEIGHT_SHARING has no effect in the compatibility backend (one process per instance)")

        # As in the C++ backend: graph-executor optimisation follows DISABLE_OPTIMIZED_EXECUTION; the profiling
        # switches change torch's defaults only when the parameter is given.
        torch._C._set_graph_executor_optimize(not self.disable_optimized)
        if "ENABLE_JIT_PROFILING" in params:
            torch._C._jit_set_profiling_mode(flag("ENABLE_JIT_PROFILING", True))
        if "ENABLE_JIT_EXECUTOR" in params:
            torch._C._jit_set_profiling_executor(flag("ENABLE_JIT_EXECUTOR", True))
        torch.backends.cudnn.enabled = not disable_cudnn

        intra = count("INTRA_OP_THREAD_COUNT")
        if intra > 0:
            torch.set_num_threads(intra)
        inter = count("INTER_OP_THREAD_COUNT")
        if inter > 0:
            try:
                torch.set_num_interop_threads(inter)
            except RuntimeError as err:  # can be set only once, before any inter-op work
                _log_warn(f"INTER_OP_THREAD_COUNT={inter} not applied: {err}")

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
        try:
            schema = self.module.forward.schema
        except AttributeError as err:
            raise CompatBackendError(f"model '{self.name}' has no TorchScript forward() method") from err
        names = []
        for arg in schema.arguments[1:]:  # skip self
            kind = arg.type.kind()
            if kind != "TensorType":
                raise CompatBackendError(
                    f"model '{self.name}': forward() argument '{arg.name}' has type {arg.type}; the compatibility "
                    "backend supports Tensor arguments only"
                )
            names.append(arg.name)
        return names

    # -- inference --------------------------------------------------------------------------------------------
    def _request_tensors(self, request):
        tensors = []
        for name, dtype in self.inputs:
            pb_tensor = pb_utils.get_input_tensor_by_name(request, name)
            if pb_tensor is None:
                raise CompatBackendError(f"request for model '{self.name}' lacks input '{name}'")
            tensor = torch.utils.dlpack.from_dlpack(pb_tensor.to_dlpack())
            if tensor.dtype != dtype:
                raise CompatBackendError(
                    f"input '{name}' has datatype {triton_type_name(tensor.dtype)}, the configuration says "
                    f"{triton_type_name(dtype)}"
                )
            if self.max_batch_size > 0 and tensor.dim() == 0:
                raise CompatBackendError(f"input '{name}' lacks the batch dimension")
            tensors.append(tensor)
        return tensors

    def _group_key(self, tensors):
        if self.max_batch_size > 0:
            return tuple(tuple(t.shape[1:]) for t in tensors)
        return None  # no batch dimension: every request runs alone

    def _forward(self, tensors):
        args = [None] * len(tensors)
        for position, tensor in zip(self.input_positions, tensors):
            args[position] = tensor.to(self.device) if tensor.device != self.device else tensor
        guard = torch.inference_mode() if self.inference_mode else torch.no_grad()
        with guard:
            result = self.module(*args)
        items = flatten_outputs(result, self.pt2)
        selected = []
        for (name, dtype), index in zip(self.outputs, self.output_positions):
            if index >= len(items):
                raise CompatBackendError(
                    f"output '{name}' expects model output {index}, but the model returned {len(items)} output(s)"
                )
            out = items[index]
            if out.dtype != dtype:
                raise CompatBackendError(
                    f"configuration expects datatype {triton_type_name(dtype)} for output '{name}', model provides "
                    f"{triton_type_name(out.dtype)}; set data_type to {triton_type_name(out.dtype)} in config.pbtxt "
                    "or export the model with that output type"
                )
            selected.append((name, out))
        return selected

    @staticmethod
    def _to_pb(name, tensor):
        if tensor.device.type == "cpu":
            return pb_utils.Tensor(name, tensor.detach().contiguous().numpy())
        return pb_utils.Tensor.from_dlpack(name, torch.utils.dlpack.to_dlpack(tensor.detach().contiguous()))

    def execute(self, requests):
        responses = [None] * len(requests)
        groups = {}
        for i, request in enumerate(requests):
            try:
                tensors = self._request_tensors(request)
            except Exception as err:
                responses[i] = pb_utils.InferenceResponse(error=_triton_error(str(err)))
                continue
            key = self._group_key(tensors)
            if key is None:
                key = ("single", i)
            groups.setdefault(key, []).append((i, tensors))

        for members in groups.values():
            try:
                self._run_group(members, responses)
            except Exception as err:
                message = f"model '{self.name}': {err}"
                for i, _ in members:
                    responses[i] = pb_utils.InferenceResponse(error=_triton_error(message))

        if self.cache_cleaning and self.device.type == "cuda":
            torch.cuda.empty_cache()
        return responses

    def _run_group(self, members, responses):
        if len(members) == 1 or self.max_batch_size == 0:
            batched = members[0][1]
        else:
            batched = [torch.cat([tensors[k] for _, tensors in members], dim=0) for k in range(len(self.inputs))]
        outputs = self._forward(batched)
        if len(members) == 1:
            i = members[0][0]
            responses[i] = pb_utils.InferenceResponse(output_tensors=[self._to_pb(n, t) for n, t in outputs])
            return
        sizes = [tensors[0].shape[0] for _, tensors in members]
        total = sum(sizes)
        for name, tensor in outputs:
            if tensor.shape[0] != total:
                raise CompatBackendError(
                    f"output '{name}' has {tensor.shape[0]} rows for a batch of {total}; with max_batch_size > 0 "
                    "every output must keep the batch dimension first"
                )
        split = [torch.split(tensor, sizes, dim=0) for _, tensor in outputs]
        for j, (i, _) in enumerate(members):
            responses[i] = pb_utils.InferenceResponse(
                output_tensors=[self._to_pb(name, split[k][j]) for k, (name, _) in enumerate(outputs)]
            )

    def finalize(self):
        self.module = None
