"""The in-process models beside the exported TorchScript: the repository's bf16 and pt2 exports of the same
source, or ones made here with trace's recipes."""
from __future__ import annotations

import copy
from pathlib import Path

import torch


def sibling_export(repo: Path, meta, dtype: str, fmt: str, batching: str = "padded"):
    """An export in ``repo`` of the same source in ``dtype``, format ``fmt`` and ``batching``, or None. It must also
    pool and normalize alike: its rows are compared with the same reference."""
    from ..checks.verify import exported_models

    return next((m for m in exported_models(repo) if m.metadata.source_path == meta.source_path
                 and (m.metadata.pooling, m.metadata.normalize) == (meta.pooling, meta.normalize)
                 and m.metadata.dtype == dtype and m.metadata.format == fmt and m.metadata.batching == batching),
                None)


def pt2_module(repo: Path, meta, wrapper, spec, example, scratch: Path):
    """The repository's fp32 pt2 export of the same source if there is one, else one compiled here (same recipe)."""
    from ..export.pt2 import PT2_FILENAME, export_pt2, load_pt2

    found = sibling_export(repo, meta, "float32", "pt2")
    if found is not None:
        return load_pt2(found.version_dir / PT2_FILENAME), f"exported model {found.name}"
    path = export_pt2(wrapper, example, spec.max_positions or spec.max_seq_len, scratch / PT2_FILENAME)
    return load_pt2(path), ("no pt2 export in the repository: compiled here with the recipe of "
                            "`trace --format pt2` (torch.export, dynamic batch and length, AOTInductor)")


def bf16_module(repo: Path, meta, reference, spec, example):
    """The repository's bf16 export of the same source if there is one, else one traced here (same recipe)."""
    from ..export.pipeline import DTYPES
    from ..export.reference import encoder_of
    from ..export.tracing import trace
    from ..export.wrapper import build_wrapper

    found = sibling_export(repo, meta, "bfloat16", "torchscript")
    if found is not None:
        return torch.jit.load(str(found.version_dir / "model.pt")), f"exported model {found.name}"
    encoder = copy.deepcopy(encoder_of(reference)).to(DTYPES["bfloat16"])
    wrapper = build_wrapper(encoder, spec.input_names, spec.pooling, spec.normalize)
    return trace(wrapper, example), ("no bf16 export in the repository: traced here with the recipe of "
                                     "`trace --dtype bfloat16` (bf16 encoder, fp32 pooling)")
