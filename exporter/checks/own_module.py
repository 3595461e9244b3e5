"""verify's second reference for a ``--precision bf16|int8`` export: its own low-precision module, run in process.

Served rows of a lossy export are held to two things (both must pass): fp32 eager sentence-transformers with the
quality gate the export recorded, and, here, the export's own TorchScript module with the fp32 bound. The gate
alone cannot tell a served model that computes what was exported from one that does not: a stale bf16 file served
in an int8 export's place stays well within the int8 gate.

Why ``model.pt`` through ``torch.jit.load`` is the oracle: it is the very file Triton loads, run by the same
LibTorch on the same CPU kernels, so whatever the server adds (which file it loaded, how requests are merged, the
backend's input handling) shows beyond the fp32 bound, while the low-precision rounding itself is the same on both
sides. Rebuilding the module through ``precision.apply_precision`` would re-run the recipe (calibration corpus,
smoothing) and test the trace again, which trace did against the eager module before writing anything.

Padding: a bf16 or int8 row moves by up to ~3e-3 with its padded length (an fp32 rounding difference in attention
flips a low-precision rounding; the gate's "padding" figure), so the module is run on exactly what each request
carried, one request at a time. Rows do not depend on the other rows of an equal-length batch (row independence,
checked by the gate), so Triton merging equal-length requests leaves them equal. A ragged module (a ragged export,
the graph text model) pads each chunk of merged texts to the chunk's longest, so its rows do move with what Triton
merged: for those the own module is compared on the run with one text in flight, where an execution is exactly that
text (:func:`merge_dependent`; a ragged export's Python text model sends each text of a request on as a request of
its own, so even one request of several texts is merged).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..export.reader import ExportedModel
from ..export.repository import latest_version_dir
from ..export.text_models import SETTINGS_FILE, served_prompt, tokenizer_name
from ..tokens import encode_batch
from .parity import TOLERANCES, Tolerance

EAGER = "fp32 eager"  # sentence-transformers in fp32: what every export is compared with
OWN = "own module"  # the export's own model.pt in process (lossy exports only)


@dataclass(frozen=True)
class Reference:
    """One thing verify compares served rows with, and the bound it holds them to."""

    name: str  # EAGER or OWN
    describe: str  # for the report: what exactly ran
    tolerance: Tolerance


def is_lossy(model: ExportedModel) -> bool:
    """A ``--precision bf16|int8`` export: it recorded a quality gate (tei_export.json ``parity.quality``)."""
    return isinstance(model.metadata.parity, dict) and bool(model.metadata.parity.get("quality"))


MERGE_NOTE = ("its rows move with the texts Triton merges with them (ragged chunks are padded to their longest text; "
              "a bf16/int8 rounding turns that into ~1e-3), so its own module is compared on the run with one text "
              "in flight only")


def _graph_file(text_model: Path | None) -> Path | None:
    """The graph text model's model.pt (tokenizer and encoder in one module), or None for a Python text model."""
    if text_model is None:
        return None
    path = latest_version_dir(text_model) / "model.pt"
    return path if path.is_file() else None


def merge_dependent(model: ExportedModel, text_model: Path | None = None) -> bool:
    """Whether served rows of ``model`` (or of its ``text_model`` folder) depend on the requests merged with them:
    a ragged export, or a graph text model (its encoder is ragged)."""
    return model.variant == "ragged" or _graph_file(text_model) is not None


class OwnModule:
    """The export's own model.pt (and its graph text model's) in process: rows for the requests verify sends."""

    def __init__(self, model: ExportedModel):
        self.model = model
        self._modules: dict[Path, torch.jit.ScriptModule] = {}

    def reference(self, text_model: Path | None = None) -> Reference:
        """The reference for the token model's check, or for ``text_model``'s (a graph text model runs its own)."""
        which = f"{text_model.name}/model.pt" if _graph_file(text_model) else "model.pt"
        return Reference(OWN, f"its own {self.model.metadata.dtype} {which} run in process", TOLERANCES["float32"])

    def compares(self, merged: bool, concurrency: int, batch: int) -> bool:
        """Whether a run is compared with the module: always, unless rows move with what Triton merged
        (``merged``, :func:`merge_dependent`); then only with one text in flight."""
        return not merged or (concurrency, batch) == (1, 1)

    def _load(self, path: Path) -> torch.jit.ScriptModule:
        if path not in self._modules:
            self._modules[path] = torch.jit.load(str(path), map_location="cpu").eval()
        return self._modules[path]

    def _run(self, path: Path, *args) -> np.ndarray:
        with torch.inference_mode():
            out = self._load(path)(*args)
        return (out[0] if isinstance(out, (tuple, list)) else out).float().numpy()

    def token_rows(self, requests: list[dict[str, np.ndarray]]) -> np.ndarray:
        """Rows for token requests (arrays by served input name), each request alone as it was sent."""
        meta = self.model.metadata
        rows = []
        for request in requests:
            if self.model.variant == "ragged":  # one text [1, L]: its end offset is what Triton adds
                ids = torch.from_numpy(request[meta.input_names[0]]).reshape(-1)
                rows.append(self._run(self.model.model_file, ids, torch.tensor([ids.numel()], dtype=torch.int32)))
            else:
                rows.append(self._run(self.model.model_file, *(torch.from_numpy(request[n]) for n in request)))
        return np.concatenate(rows, axis=0)

    def text_rows(self, text_model: Path, requests: list[list[str]]) -> np.ndarray:
        """Rows for text requests to ``text_model`` (the ``<name>_text`` folder), each request alone: a graph text
        model's own model.pt on the texts; else the texts tokenized as the Python tokenizer model does (its
        settings' buckets, or unpadded one text at a time for a ragged export) through the token model.pt."""
        graph = _graph_file(text_model)
        if graph is not None:  # tokenizer and encoder in one TorchScript module: itself is the oracle
            return np.concatenate([self._run(graph, texts) for texts in requests], axis=0)
        meta, tokenizer = self.model.metadata, self.model.tokenizer()
        ragged = self.model.variant == "ragged"  # the text model itself tokenizes, one request per text
        settings_from = text_model if ragged else text_model.parent / tokenizer_name(self.model.name)
        settings_dir = latest_version_dir(settings_from)
        settings = json.loads((settings_dir / SETTINGS_FILE).read_text(encoding="utf-8"))
        # the prompt the text model applies: its PROMPT_NAME parameter (--prompt-name) before the settings' default
        prompt = served_prompt(text_model.parent, self.model.name).text
        dtype = np.int32 if meta.input_dtype == "int32" else np.int64
        if ragged:
            return self.token_rows([encode_batch(tokenizer, [prompt + t], meta.max_seq_len, meta.input_names, dtype)
                                    for texts in requests for t in texts])
        return self.token_rows([encode_batch(tokenizer, [prompt + t for t in texts], meta.max_seq_len,
                                             meta.input_names, dtype, tuple(settings["buckets"]))
                                for texts in requests])
