"""The torch.export / AOTInductor format: ``<version>/model.pt2`` for Triton's ``platform: "torch_aoti"`` (26.03+).

Triton's pt2 path differs from the TorchScript one in two ways that shape the exported config:

* tensors are named after the package's call spec, not after ``forward()`` arguments: ``INPUT__<n>`` is the n-th
  flattened input and ``OUTPUT__<n>`` the n-th output (structural names such as ``ARGS[0]`` came later, in 26.05);
* batches above 1 were not finished there: requests merged by the dynamic batcher are not split back per request.
  So the config says ``max_batch_size: 0`` and puts the batch in ``dims``: one request carries a whole batch of
  sentences, and Triton never merges requests.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import torch

from ..errors import UnsupportedModelError, first_line

PT2_FILENAME = "model.pt2"
PT2_PLATFORM = "torch_aoti"
# The first Triton release whose pytorch backend loads model.pt2 (AOTInductor support is beta there).
PT2_MIN_TRITON = "26.03"

_ORDINAL = re.compile(r"^(?:INPUT|OUTPUT)__([0-9]+)$")


def input_name(index: int) -> str:
    return f"INPUT__{index}"


def output_name(index: int) -> str:
    return f"OUTPUT__{index}"


def ordinal(name: str) -> int | None:
    """n of ``INPUT__n`` / ``OUTPUT__n``; None for any other name."""
    match = _ORDINAL.match(name)
    return int(match.group(1)) if match else None


def export_pt2(wrapper: torch.nn.Module, example: dict[str, torch.Tensor], max_positions: int, package_path: Path
               ) -> Path:
    """``torch.export`` of ``wrapper`` with a dynamic batch and sequence length on every input, compiled and
    packaged by AOTInductor into ``package_path``; UnsupportedModelError when either step fails."""
    from torch.export import Dim

    # Batch unbounded: with max_batch_size 0 Triton does not cap it. Sequence up to what positions address.
    batch = Dim("batch", min=1)
    seq = Dim("seq", min=1, max=max_positions)
    dynamic = {name: {0: batch, 1: seq} for name in example}
    try:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.export(wrapper, tuple(example.values()), dynamic_shapes=dynamic, strict=False)
    except Exception as err:
        raise UnsupportedModelError(
            f"torch.export failed: {type(err).__name__}: {first_line(err, 300)}",
            fix="export this architecture with --format torchscript (the default)", where="--format pt2",
        ) from err
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path = torch._inductor.aoti_compile_and_package(program, package_path=str(package_path))
    except Exception as err:
        raise UnsupportedModelError(
            f"AOTInductor could not compile the exported program: {type(err).__name__}: {first_line(err, 300)}",
            fix="check that a C++ compiler (g++) is installed, or use --format torchscript", where="--format pt2",
        ) from err
    return Path(path)


def load_pt2(path: Path, device: str = "cpu"):
    """The compiled package as a callable (``model(*inputs)``), on ``device``."""
    index = torch.device(device).index
    if torch.device(device).type == "cuda" and index is None:
        index = 0
    return torch._inductor.aoti_load_package(str(path), device_index=-1 if index is None else index)
