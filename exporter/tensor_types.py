"""One table of Triton's tensor types: the config name, the client protocols' datatype, numpy and LibTorch (c10).

Everything that writes a config, sends a request or reads LibTorch's outputs looks types up here. (The
compatibility backend and the tokenizer model run inside Triton's Python backend without the ``exporter`` package,
so they keep the few entries they need.)
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TritonType:
    config: str  # config.pbtxt data_type
    wire: str  # the HTTP/gRPC datatype
    numpy: str  # numpy dtype name ("object" for strings)
    c10: str | None  # the scalar type LibTorch reports; None for strings (a List[str] in TorchScript)


TYPES = (
    TritonType("TYPE_BOOL", "BOOL", "bool", "Bool"),
    TritonType("TYPE_UINT8", "UINT8", "uint8", "Byte"),
    TritonType("TYPE_INT8", "INT8", "int8", "Char"),
    TritonType("TYPE_INT16", "INT16", "int16", "Short"),
    TritonType("TYPE_INT32", "INT32", "int32", "Int"),
    TritonType("TYPE_INT64", "INT64", "int64", "Long"),
    TritonType("TYPE_FP16", "FP16", "float16", "Half"),
    TritonType("TYPE_FP32", "FP32", "float32", "Float"),
    TritonType("TYPE_FP64", "FP64", "float64", "Double"),
    TritonType("TYPE_STRING", "BYTES", "object", None),
)
BY_CONFIG = {t.config: t for t in TYPES}
BY_NUMPY = {t.numpy: t for t in TYPES}
# What NVIDIA's LibTorch backend takes: every type above (strings as List[str] inputs); no BF16, no unsigned 16/32/64.
LIBTORCH_TYPES = tuple(t.config for t in TYPES)
# dtype names as tei-export's options and tei_export.json spell them -> config types
TYPE_OF_DTYPE = {"int64": "TYPE_INT64", "int32": "TYPE_INT32", "float32": "TYPE_FP32", "float16": "TYPE_FP16",
                 "bool": "TYPE_BOOL", "string": "TYPE_STRING"}


def numpy_dtype(config_type: str):
    """The numpy dtype of a config type (``np.object_`` for strings)."""
    import numpy as np

    return np.dtype(BY_CONFIG[config_type].numpy).type


def wire_type(dtype) -> str:
    """The protocols' datatype for a numpy array's dtype (``BYTES`` for object arrays of strings)."""
    import numpy as np

    return BY_NUMPY[np.dtype(dtype).name].wire
