"""An ONNX export of the same wrapper that is traced to TorchScript, for ONNX Runtime side-by-side benchmarks.

The graph is the one `trace` exports (encoder -> pooling -> optional normalisation, FP32 out), exported with
dynamic batch and sequence axes on every input, checked with ``onnx.checker``, and parity-checked against eager
sentence-transformers by the caller, like the TorchScript export.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch

from ..errors import UnsupportedModelError, first_line

ONNX_OPSET = 17
OUTPUT_NAME = "embedding"


def export_onnx(wrapper: torch.nn.Module, example: dict[str, torch.Tensor], path: str | Path,
                opset: int = ONNX_OPSET) -> Path:
    """Write ``wrapper`` (forward args named like ``example``'s keys) to ``path`` as ONNX and check it."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(example)
    axes = {n: {0: "batch", 1: "seq"} for n in names}
    axes[OUTPUT_NAME] = {0: "batch"}
    try:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings on transformers' Python-side shape checks
            torch.onnx.export(wrapper, tuple(example.values()), str(path), input_names=names,
                              output_names=[OUTPUT_NAME], dynamic_axes=axes, opset_version=opset, dynamo=False)
    except Exception as err:
        raise UnsupportedModelError(
            f"the model cannot be exported to ONNX: {type(err).__name__}: {first_line(err, 300)}",
            fix="benchmark without ONNX Runtime (it is a comparison, not part of the export)", where=str(path),
        ) from err
    onnx.checker.check_model(str(path))
    return path


class OnnxRuntimeModel:
    """An ONNX Runtime CPU session with the thread counts given; called like the TorchScript module."""

    def __init__(self, path: str | Path, intra_op_threads: int, inter_op_threads: int = 1):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = inter_op_threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def __call__(self, *tensors: torch.Tensor) -> torch.Tensor:
        feed = {name: t.numpy() for name, t in zip(self.input_names, tensors)}
        return torch.from_numpy(self.session.run([OUTPUT_NAME], feed)[0])
