"""The compatibility backend's reading of a model config, as NVIDIA's C++ LibTorch backend (r24.10) reads it:
its error type, data types, and ``parameters`` values (booleans and integers parsed as the C++ code parses them), and
the inter-op thread claim that release enforces across a server's models. Pure: no Triton objects; imports only
the standard library and torch, as it runs inside the Python backend's stub (see ``model.py``)."""
import os
import re

import torch

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
