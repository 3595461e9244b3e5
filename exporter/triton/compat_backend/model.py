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

Errors are returned per request as ``TritonError``; the stub keeps serving. The backend is this file and its
``tei_compat_*.py`` siblings (config reading, name matching, tensors), copied together into the backend folder;
they use only torch, numpy, the standard library and ``triton_python_backend_utils`` (never the ``exporter``
package), so the stub's Python can run them with nothing else installed.
"""
import json
import os
import sys

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the siblings travel with this file
from tei_compat_config import (STATE_ENV, STRING, _BATCH_INPUT_TYPES, CompatBackendError,  # noqa: E402,F401
                               _default_state_dir, claim_interop_threads, parse_bool, parse_int, read_parameters,
                               torch_dtype, triton_type_name)
from tei_compat_naming import match_inputs, match_outputs, match_pt2, naming_convention  # noqa: E402,F401
from tei_compat_tensors import _accumulate, batch_input_tensor, flatten_outputs  # noqa: E402,F401

BACKEND_BANNER = (
    "tei-export LibTorch compatibility backend (Python-based, model.py) is serving this model; "
    "it is not NVIDIA's libtriton_pytorch.so"
)


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
