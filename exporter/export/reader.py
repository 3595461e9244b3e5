"""One reader of an exported model: its config, metadata, model file, tokenizer, spec and reference.

verify, soak, tune, bench and the C++ check all read an export through this, so each of them compares against the
same thing: sentence-transformers loaded with the export's own module chain (its overrides), max length and
revision, from the source folder while that exists, else from the hub id at the exported revision.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

from ..errors import RepositoryError, VerificationError
from .metadata import ExportMetadata
from .repository import METADATA_FILE, latest_version_dir, models


@dataclass
class ExportedModel:
    """A model of a repository that tei-export wrote (its latest version has tei_export.json)."""

    name: str
    model_dir: Path
    version_dir: Path
    metadata: ExportMetadata

    @property
    def variant(self) -> str:
        return self.metadata.variant

    @cached_property
    def config(self):
        """The config.pbtxt as Triton's ModelConfig protobuf."""
        from .triton_config import read_config

        return read_config(self.model_dir / "config.pbtxt")

    @property
    def version(self) -> int:
        return int(self.version_dir.name)

    @property
    def model_file(self) -> Path:
        from .variants import VARIANTS

        return self.version_dir / (self.config.default_model_filename or VARIANTS[self.variant].filename)

    @property
    def tokenizer_dir(self) -> Path:
        return self.version_dir / self.metadata.tokenizer_dir

    def tokenizer(self):
        from transformers import AutoTokenizer

        if not self.tokenizer_dir.is_dir():
            raise RepositoryError("no tokenizer folder next to the model", where=str(self.version_dir),
                                  fix="export the model again with tei-export trace")
        return AutoTokenizer.from_pretrained(str(self.tokenizer_dir))

    def spec(self):
        """The source model as it was exported: the recorded module chain (pooling, Dense, normalize, dims), max
        length and revision."""
        return spec_from_metadata(asdict(self.metadata))

    def reference(self, device: str = "cpu"):
        """sentence-transformers built with the export's own overrides: what every check compares with."""
        from .reference import load_reference

        return load_reference(self.spec(), device=device)

    @property
    def text_dir(self) -> Path:
        """The folder of its text model, ``<name>_text`` (which may not exist)."""
        from .text_models import text_name

        return self.model_dir.parent / text_name(self.name)

    @property
    def graph_text(self) -> bool:
        """Whether its text model is the graph one (``--tokenizer graph``: tokenizer and encoder in one TorchScript
        model.pt on ``pytorch_libtorch``); False for the Python text models, or where it has none."""
        from .triton_config import read_config

        config = self.text_dir / "config.pbtxt"
        return config.is_file() and read_config(config).platform == "pytorch_libtorch"

    def text_rows(self, reference, texts: list[str]):
        """What its text model must answer for ``texts``: ``reference.encode`` told the prompt that the text model
        puts before every text (``prompt_name=NAME`` where the text model records the name)."""
        from .text_models import served_prompt

        return reference.encode(texts, **served_prompt(self.model_dir.parent, self.name).encode_kwargs())


def spec_from_metadata(meta: dict):
    """The spec an export was made from, read from its tei_export.json: the source folder while it exists, else the
    hub id at the exported revision, with the recorded overrides and module chain. Keys a hand-written or older
    file lacks (pooling, modules) mean "as the source model says"."""
    from dataclasses import replace

    from .modules import ModuleChain
    from .spec import SpecOverrides, read_spec

    path = meta.get("source_path")
    source = path if path and Path(path).is_dir() else meta["source"]
    spec = read_spec(source, SpecOverrides(meta.get("pooling"), meta.get("normalize"), meta.get("max_seq_len"),
                                           meta.get("dims"), meta.get("task")),
                     revision=meta.get("revision"), trust_remote_code=bool(meta.get("trust_remote_code")))
    if not meta.get("modules"):
        return spec
    # The recorded chain (Dense and LayerNorm included) with the recorded pooling, normalize and dims applied as at
    # export time, so a file whose fields disagree with its chain is compared as its fields say.
    chain = ModuleChain.from_list(meta["modules"], spec.hidden_size, spec.chain.transformer_path)
    return replace(spec, chain=chain.with_overrides(meta.get("pooling"), meta.get("normalize"), meta.get("dims")))


def read_exported(model_dir: Path) -> ExportedModel:
    """The latest version of one exported model folder."""
    model_dir = Path(model_dir)
    vdir = latest_version_dir(model_dir)
    if not (vdir / METADATA_FILE).is_file():
        raise RepositoryError(f"no {METADATA_FILE} next to the model", where=str(vdir),
                              fix="export the model with tei-export trace, which writes it")
    return ExportedModel(model_dir.name, model_dir, vdir, ExportMetadata.read(vdir))


def resolve_name(repo: Path, name: str, everything: list[ExportedModel] | None = None) -> tuple[ExportedModel, bool]:
    """The export that ``name`` names, and whether it names that export's text model (``<export>_text``) rather
    than the token model; an error listing the names there are when it is neither. ``everything``: the repository's
    exports, when already read."""
    from .text_models import text_name

    everything = everything if everything is not None else exported_models(repo)
    for model in everything:
        if model.name == name:
            return model, False
    for model in everything:
        if text_name(model.name) == name and (model.text_dir / "config.pbtxt").is_file():
            return model, True
    choices = sorted({m.name for m in everything} | {m.text_dir.name for m in everything
                                                      if (m.text_dir / "config.pbtxt").is_file()})
    raise VerificationError(f"no exported model named {name} in the repository (a token model, or the text model "
                            "<name>_text written beside one)", fix=f"choose from {', '.join(choices)}",
                            where=str(repo))


def exported_models(repo: Path, names: list[str] | None = None) -> list[ExportedModel]:
    """Every exported model of ``repo`` (or those ``names``), latest version each."""
    found = []
    for model_dir in models(Path(repo)):
        if names and model_dir.name not in names:
            continue
        try:
            vdir = latest_version_dir(model_dir)
        except Exception:  # no numeric version folder: not a model tei-export wrote
            continue
        if (vdir / METADATA_FILE).is_file():  # an ensemble or a Python model has none
            found.append(ExportedModel(model_dir.name, model_dir, vdir, ExportMetadata.read(vdir)))
    missing = set(names or ()) - {m.name for m in found}
    if missing:
        raise VerificationError(f"no exported model named {', '.join(sorted(missing))} in the repository",
                                fix="check --model against the folders that have <version>/tei_export.json",
                                where=str(repo))
    if not found:
        raise VerificationError("the repository holds no model exported by tei-export",
                                fix="run tei-export trace MODEL --out REPOSITORY first", where=str(repo))
    return found
