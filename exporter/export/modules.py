"""The sentence-transformers module chain as data: ``modules.json`` read into the ordered modules after the Transformer.

sentence-transformers builds a model from ``modules.json``: a Transformer, then small modules in the file's order
(Pooling, Dense, LayerNorm, Normalize, ...). The export computes the same chain inside the graph, so the chain is
read once here and everything that needs it (the traced head, the eager reference, tei_export.json) takes it from
this object. A module kind that cannot be exported is an error naming it; an override (``--pooling``,
``--normalize``, ``--dims``) is a new chain, never a flag beside the old one.

Light: no torch import, so the CLI and ``spec`` read chains without loading torch.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..errors import ModelSourceError, UnsupportedModelError
from .pooling import POOLING_MODES, canonical_pooling


# Each kind knows how sentence-transformers loads it (``load``: its own module, for the reference) and what the
# exported graph computes for it (``step``: a torch module on the pooled embedding, with the loaded module's
# weights; see head.py). Adding a kind is one class here.


@dataclass(frozen=True)
class Pooling:
    mode: str
    kind: str = "Pooling"

    def load(self, root: Path, width: int):
        from sentence_transformers.sentence_transformer.modules.pooling import Pooling as StPooling

        return StPooling(width, pooling_mode=self.mode)

    def step(self, loaded):
        from .steps import PoolStep

        return PoolStep(self.mode)


@dataclass(frozen=True)
class Dense:
    """A Linear (+ activation) whose weights sentence-transformers loads from ``path``."""

    path: str
    in_features: int
    out_features: int
    activation: str  # sentence-transformers' class path, e.g. torch.nn.modules.linear.Identity
    kind: str = "Dense"

    def load(self, root: Path, width: int):
        from sentence_transformers.base.modules.dense import Dense as StDense

        return StDense.load(str(root), subfolder=self.path)

    def step(self, loaded):
        import copy

        import torch

        return torch.nn.Sequential(copy.deepcopy(loaded.linear).float(), copy.deepcopy(loaded.activation_function))


@dataclass(frozen=True)
class LayerNorm:
    path: str
    dimension: int
    kind: str = "LayerNorm"

    def load(self, root: Path, width: int):
        from sentence_transformers.sentence_transformer.modules.layer_norm import LayerNorm as StLayerNorm

        return StLayerNorm.load(str(root), subfolder=self.path)

    def step(self, loaded):
        import copy

        return copy.deepcopy(loaded.norm).float()


@dataclass(frozen=True)
class Normalize:
    kind: str = "Normalize"

    def load(self, root: Path, width: int):
        from sentence_transformers.base.modules.normalize import Normalize as StNormalize

        return StNormalize()

    def step(self, loaded):
        from .steps import NormalizeStep

        return NormalizeStep()


@dataclass(frozen=True)
class Truncate:
    """Matryoshka: keep the first ``dims`` values (``SentenceTransformer(truncate_dim=...)``). sentence-transformers
    truncates in encode(), after forward(): the reference applies it there (no ``load``)."""

    dims: int
    kind: str = "Truncate"

    def step(self, loaded):
        from .steps import TruncateStep

        return TruncateStep(self.dims)


Module = Pooling | Dense | LayerNorm | Normalize | Truncate
_KINDS = {cls.kind: cls for cls in (Pooling, Dense, LayerNorm, Normalize, Truncate)}  # type: ignore[attr-defined]
# sentence-transformers classes that carry no computation at inference (Dropout) are skipped, as its encode() does.
_SKIPPED = ("Dropout",)


@dataclass(frozen=True)
class ModuleChain:
    """The modules after the Transformer, in order, and the width of what comes out of each."""

    transformer_path: str  # relative to the model folder ("" when the Transformer is the folder itself)
    modules: tuple[Module, ...]
    hidden_size: int

    @property
    def pooling(self) -> str:
        return next(m.mode for m in self.modules if isinstance(m, Pooling))

    @property
    def normalize(self) -> bool:
        """Whether the embedding that comes out is L2-normalised."""
        return _ends_normalized(self.modules)

    @property
    def dims(self) -> int | None:
        return next((m.dims for m in self.modules if isinstance(m, Truncate)), None)

    @property
    def width(self) -> int:
        """The embedding width: the hidden size, the last Dense's output, or the Matryoshka truncation."""
        width = self.hidden_size
        for m in self.modules:
            if isinstance(m, Dense):
                width = m.out_features
            elif isinstance(m, Truncate):
                width = min(width, m.dims)
        return width

    def before_truncation(self) -> tuple[Module, ...]:
        """The modules sentence-transformers runs inside forward(); truncation happens after it, in encode()."""
        cut = next((i for i, m in enumerate(self.modules) if isinstance(m, Truncate)), len(self.modules))
        return self.modules[:cut]

    def with_overrides(self, pooling: str | None = None, normalize: bool | None = None,
                       dims: int | None = None) -> "ModuleChain":
        """The chain an export with ``--pooling``/``--normalize``/``--dims`` computes."""
        modules = list(self.modules)
        if pooling is not None:
            modules = [replace(m, mode=pooling) if isinstance(m, Pooling) else m for m in modules]
            if not any(isinstance(m, Pooling) for m in modules):
                modules.insert(0, Pooling(pooling))
        if normalize is False:
            modules = [m for m in modules if not isinstance(m, Normalize)]
        elif normalize and not _ends_normalized(modules):
            modules.append(Normalize())
        if dims is not None:
            # a chain recorded with --dims already ends in Truncate (+ Normalize): start again from before it
            modules = list(replace(self, modules=tuple(modules)).before_truncation())
            width = replace(self, modules=tuple(modules)).width
            if not 1 <= dims <= width:
                raise UnsupportedModelError(f"--dims {dims} is outside the embedding's width (1..{width})",
                                            fix=f"pass --dims {width} or less", where="--dims")
            normalized = _ends_normalized(modules)
            # sentence-transformers truncates after forward() and normalises again when asked (encode's
            # normalize_embeddings); a normalised model's Matryoshka rows are unit vectors again.
            modules.append(Truncate(dims))
            if normalized:
                modules.append(Normalize())
        return replace(self, modules=tuple(modules))

    def to_list(self) -> list[dict]:
        return [asdict(m) for m in self.modules]

    @classmethod
    def from_list(cls, items: list[dict], hidden_size: int, transformer_path: str = "") -> "ModuleChain":
        modules = []
        for item in items:
            item = dict(item)
            kind = item.pop("kind", None)
            if kind not in _KINDS:
                raise ModelSourceError(f"unknown module kind {kind!r} in a recorded module chain",
                                       fix="export the model again with this version of tei-export")
            modules.append(_KINDS[kind](**item))
        return cls(transformer_path, tuple(modules), hidden_size)


def _ends_normalized(modules) -> bool:
    """A Normalize after the last module that changes the row (Dense, LayerNorm)."""
    for m in reversed(modules):
        if isinstance(m, Normalize):
            return True
        if isinstance(m, (Dense, LayerNorm)):
            return False
    return False


def read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ModelSourceError(f"{path.name} is not valid JSON: {err}", fix="repair or remove the file",
                               where=str(path)) from None


def read_modules(folder: Path) -> list[dict]:
    """``modules.json`` as sentence-transformers saves it; [] when the folder has none (a plain transformers model)."""
    path = folder / "modules.json"
    return list(read_json(path)) if path.is_file() else []


def _class_name(module: dict) -> str:
    return str(module.get("type", "")).rsplit(".", 1)[-1]


def transformer_dir(folder: Path, modules: list[dict]) -> Path:
    """The folder of the Transformer module's weights and config.json."""
    first = next((m for m in modules if _class_name(m) == "Transformer"), None)
    return folder / first["path"] if first and first.get("path") else folder


def pooling_mode(config: dict, where: Path) -> str:
    """The one pooling mode of a Pooling module's config.json (the current and the legacy one-flag-per-mode form)."""
    mode = config.get("pooling_mode")
    if mode is None:
        flags = [k for k, v in config.items() if k.startswith("pooling_mode_") and v]
        modes = [canonical_pooling(k.removeprefix("pooling_mode_")) for k in flags]
    else:
        modes = [canonical_pooling(m) for m in ([mode] if isinstance(mode, str) else mode)]
    if len(modes) != 1 or modes[0] is None:
        raise UnsupportedModelError(f"pooling configuration {config} is not a single supported mode",
                                    fix=f"pass --pooling with one of: {', '.join(POOLING_MODES)}", where=str(where))
    if config.get("include_prompt") is False:
        raise UnsupportedModelError(
            "pooling excludes prompt tokens (include_prompt: false), which depends on the prompt given per request",
            fix="export with --pooling to pool over all tokens, knowing embeddings then differ from the original",
            where=str(where))
    return modes[0]


def _module_config(folder: Path, module: dict) -> tuple[dict, Path]:
    path = folder / str(module.get("path") or "") / "config.json"
    if not path.is_file():
        raise ModelSourceError(f"the {_class_name(module)} module has no config.json",
                               fix="pass the complete folder that SentenceTransformer.save() wrote", where=str(path))
    return dict(read_json(path)), path


def read_chain(folder: Path, modules: list[dict], hidden_size: int, pooling: str | None = None) -> ModuleChain:
    """The chain after the Transformer, from ``modules.json``. ``pooling`` stands in when the folder says nothing
    of pooling (no modules.json, or no Pooling module); without either, pooling is unknown and that is an error."""
    chain: list[Module] = []
    for module in modules:
        name = _class_name(module)
        if name in ("Transformer", *_SKIPPED):
            continue
        if name == "Pooling":
            config, where = _module_config(folder, module)
            chain.append(Pooling(pooling or pooling_mode(config, where)))
        elif name == "Dense":
            config, _ = _module_config(folder, module)
            chain.append(Dense(str(module.get("path") or ""), int(config["in_features"]),
                               int(config["out_features"]),
                               str(config.get("activation_function") or "torch.nn.modules.activation.Tanh")))
        elif name == "LayerNorm":
            config, _ = _module_config(folder, module)
            chain.append(LayerNorm(str(module.get("path") or ""), int(config["dimension"])))
        elif name == "Normalize":
            chain.append(Normalize())
        else:
            raise UnsupportedModelError(
                f"sentence-transformers module '{module.get('type')}' cannot be exported (tei-export exports "
                "Transformer, Pooling, Dense, LayerNorm, Normalize and Dropout)",
                fix="export a model without that module, or remove it from modules.json knowing embeddings change",
                where=str(folder / "modules.json"))
    if not any(isinstance(m, Pooling) for m in chain):
        if pooling is None:
            raise ModelSourceError(
                "pooling is unknown: no sentence-transformers modules.json with a Pooling module and its config.json",
                fix=f"pass --pooling ({', '.join(POOLING_MODES)}) as the model card says", where=str(folder))
        chain.insert(0, Pooling(pooling))
    for m in chain:
        # sentence-transformers itself loads only torch's activations without remote code.
        if isinstance(m, Dense) and not m.activation.startswith("torch."):
            raise UnsupportedModelError(f"the Dense module's activation '{m.activation}' is not a torch module",
                                        fix="only torch.nn activations are exported",
                                        where=str(folder / m.path / "config.json"))
    transformer = next((m for m in modules if _class_name(m) == "Transformer"), None)
    return ModuleChain(str(transformer.get("path") or "") if transformer else "", tuple(chain), hidden_size)
