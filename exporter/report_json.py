"""Reports as strict JSON: a figure that is NaN or infinite (a cell with no answers, a wrongly shaped answer) is
written as null, a path as its string; strict JSON has no spelling for the first, and ``json.dumps`` writes ``NaN``
without asking a ``default`` hook."""
from __future__ import annotations

import json
import math
from pathlib import Path


def plain(value):
    """``value`` with NaN and infinities as None and paths as strings, through dicts, lists and tuples."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def dumps(value, indent: int = 2) -> str:
    return json.dumps(plain(value), indent=indent, allow_nan=False)
