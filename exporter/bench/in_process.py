"""The in-process models beside the exported TorchScript: the repository's bf16 and pt2 exports of the same
source, or ones made here with trace's recipes."""
from __future__ import annotations

import copy
from pathlib import Path

import torch


def sibling_export(repo: Path, meta, dtype: str, variant: str):
    """An export in ``repo`` of the same source in ``dtype`` and ``variant`` (padded, ragged, pt2), or None. It must
    also compute the same module chain (pooling, normalize, Dense, dims): its rows are compared with the same
    reference."""
    from ..export.reader import exported_models

    return next((m for m in exported_models(repo) if m.metadata.source_path == meta.source_path
                 and m.metadata.modules == meta.modules and m.metadata.dtype == dtype
                 and m.metadata.variant == variant), None)


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
    from ..export.tracing import trace
    from ..export.wrapper import wrapper_for

    found = sibling_export(repo, meta, "bfloat16", "padded")
    if found is not None:
        return torch.jit.load(str(found.version_dir / "model.pt")), f"exported model {found.name}"
    encoder = copy.deepcopy(reference.encoder).to(DTYPES["bfloat16"])
    wrapper = wrapper_for(spec, reference, encoder)
    return trace(wrapper, example), ("no bf16 export in the repository: traced here with the recipe of "
                                     "`trace --dtype bfloat16` (bf16 encoder, fp32 pooling)")
