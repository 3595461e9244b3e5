"""The tensors of one execution, as NVIDIA's C++ LibTorch backend (r24.10) and Triton's backend input collector make
them: what ``forward()`` may return (refused in the C++ backend's words) and the ``batch_input`` tensors. Pure: no
Triton objects."""
import torch

from tei_compat_config import CompatBackendError


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
