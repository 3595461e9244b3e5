"""What to export: a model source resolved to a local folder, and the embedding semantics read from it.

The sentence-transformers files decide pooling, normalisation, max length and prompts; CLI overrides win.
Nothing here loads weights: this is cheap, and every problem it finds is reported before any slow step.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ModelSourceError, UnsupportedModelError, first_line
from .adapters import choose_task, require_task, task_adapters, task_prompt
from .architectures import Architecture, architecture_of, config_value
from .modules import ModuleChain, read_chain, read_json, read_modules, transformer_dir
from .pooling import POOLING_MODES, canonical_pooling

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
# A tokenizer_config model_max_length this large means "not set" (transformers' VERY_LARGE_INTEGER).
_UNSET_MAX_LENGTH = 10**9


@dataclass(frozen=True)
class SpecOverrides:
    """What the user said on the command line; None means "as the model says"."""

    pooling: str | None = None
    normalize: bool | None = None
    max_seq_len: int | None = None
    dims: int | None = None  # Matryoshka: the first N values, normalised again when the model normalises
    task: str | None = None  # the task adapter merged into the weights (adapters.py), for checkpoints that have them


@dataclass(frozen=True)
class ModelSpec:
    source: str  # as given: a hub id or a folder
    path: Path  # local folder of the transformer weights, config.json and tokenizer
    root: Path  # the sentence-transformers folder (modules.json and the modules' folders); often the same
    revision: str | None
    architecture: Architecture
    hidden_size: int
    max_positions: int  # sequence positions the position embeddings can address
    vocab_size: int
    chain: ModuleChain  # the sentence-transformers modules after the Transformer, overrides applied
    max_seq_len: int
    has_st_metadata: bool
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    trust_remote_code: bool = False
    # A checkpoint that names remote code (auto_map), or carries task adapters, loaded with the native class of its
    # architecture instead (see native.py and native_path).
    native: bool = False
    task: str | None = None  # the task adapter merged into the weights (adapters.py)
    tasks: tuple[str, ...] = ()  # the tasks the checkpoint has adapters for, in adapter order

    def require_task(self) -> None:
        """A checkpoint with task adapters loads only with one chosen (its tokenizer and files read without)."""
        require_task(self.tasks, self.task, str(self.path / "config.json"))

    @property
    def model_type(self) -> str:
        return self.architecture.model_type

    @property
    def pooling(self) -> str:
        return self.chain.pooling

    @property
    def normalize(self) -> bool:
        return self.chain.normalize

    @property
    def dims(self) -> int | None:
        return self.chain.dims

    @property
    def embedding_width(self) -> int:
        """What one embedding row holds: the hidden size, a Dense module's output, or the Matryoshka dims."""
        return self.chain.width

    @property
    def native_path(self) -> Path | None:
        """The cached folder that loads the checkpoint with its native class (its config.json rewritten for it, the
        task adapter merged): made on first use, when the weights load, so reading a spec stays cheap."""
        if not self.native:
            return None
        from .native import native_folder

        self.require_task()
        return native_folder(self.path, read_json(self.path / "config.json"), self.model_type, self.task)

    @property
    def load_path(self) -> Path:
        """The folder transformers loads the encoder from."""
        return self.native_path or self.path

    @property
    def input_names(self) -> tuple[str, ...]:
        return self.architecture.input_names


def _looks_like_path(source: str) -> bool:
    # Hub ids are "name" or "org/name"; anything else is meant as a folder.
    return source.startswith(("/", ".", "~")) or source.count("/") > 1


def resolve_source(source: str, revision: str | None = None) -> Path:
    """A local folder for ``source``: the folder itself, or a hub snapshot (HF_HUB_OFFLINE and the cache apply)."""
    local = Path(source).expanduser()
    if local.exists():
        if not local.is_dir():
            raise ModelSourceError(
                "the model source is a file, not a folder", fix="pass the folder that holds config.json", where=source
            )
        return local.resolve()
    if _looks_like_path(source):
        raise ModelSourceError(
            "model folder not found", fix="check the path, or pass a Hugging Face hub id such as BAAI/bge-small-en-v1.5",
            where=source,
        )
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(source, revision=revision))
    except Exception as err:  # the hub client raises many types; all mean "cannot get this model"
        raise hub_error(source, err) from None


def source_label(source: str) -> str:
    """How files that travel (config.pbtxt headers) name the source: a hub id as given, a local folder by its name
    only, since its full path may hold a home folder or a user name. tei_export.json keeps the full provenance."""
    local = Path(source).expanduser()
    return local.resolve().name if local.exists() else source


def hub_error(source: str, err: Exception) -> ModelSourceError:
    """Why ``snapshot_download(source)`` failed, in words: not cached while offline, the hub unreachable, or the
    hub's own answer (unknown id, gated model, ...)."""
    from huggingface_hub import constants
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    cause = err.__cause__
    if isinstance(err, LocalEntryNotFoundError) and isinstance(cause, OfflineModeIsEnabled):
        return ModelSourceError(
            f"cannot get model '{source}': it is not in the local Hugging Face cache, and HF_HUB_OFFLINE=1 "
            "forbids downloading it",
            fix="check the id, unset HF_HUB_OFFLINE to download it, or pass a local folder")
    if isinstance(err, LocalEntryNotFoundError) and cause is not None:
        # The hub client words this as "Got: <ExceptionType>: ..."; say instead which step failed.
        return ModelSourceError(
            f"cannot get model '{source}': the Hugging Face hub ({constants.ENDPOINT}) could not be reached "
            f"({type(cause).__name__}: {first_line(cause) or 'no details'}) and the model is not in the local cache",
            fix="check network access (proxy settings, HF_ENDPOINT), or pass a local folder")
    return ModelSourceError(
        f"cannot get model '{source}' from the Hugging Face hub: {first_line(err) or type(err).__name__}",
        fix="check the id (a private or gated model also needs HF_TOKEN), or pass a local folder")


def _max_seq_len_from_files(folder: Path, transformer_dir: Path) -> int | None:
    for cfg in (transformer_dir / "sentence_bert_config.json", folder / "sentence_bert_config.json"):
        if cfg.is_file():
            value = read_json(cfg).get("max_seq_length")
            if value:
                return int(value)
    tok_cfg = transformer_dir / "tokenizer_config.json"
    if tok_cfg.is_file():
        value = read_json(tok_cfg).get("model_max_length")
        if isinstance(value, (int, float)) and 0 < value < _UNSET_MAX_LENGTH:
            return int(value)
    return None


def _has_weights(folder: Path) -> bool:
    return any((folder / name).is_file() for name in WEIGHT_FILES)


def read_spec(
    source: str,
    overrides: SpecOverrides = SpecOverrides(),
    revision: str | None = None,
    trust_remote_code: bool = False,
) -> ModelSpec:
    """Resolve ``source`` and read everything an export needs to know about it."""
    folder = resolve_source(source, revision)
    modules = read_modules(folder)
    model_dir = transformer_dir(folder, modules)

    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise ModelSourceError(
            "no config.json: this is not a Hugging Face model folder",
            fix="pass the folder saved by save_pretrained() / SentenceTransformer.save()", where=str(model_dir),
        )
    if not _has_weights(model_dir):
        raise ModelSourceError(
            f"no weights: none of {', '.join(WEIGHT_FILES)} found",
            fix="download the complete model (git lfs pull, or snapshot_download) into the folder",
            where=str(model_dir),
        )
    config = read_json(config_path)
    arch = architecture_of(config, where=str(config_path))
    task = choose_task(config, overrides.task, str(config_path), trust_remote_code)
    # The family has a native class in transformers: load the checkpoint with it (native.py checks that every
    # weight maps when the reference loads) instead of running the checkpoint's own code, with the chosen task
    # adapter merged into the weights.
    native = bool("auto_map" in config or task_adapters(config)) and not trust_remote_code

    hidden = config_value(config, arch.hidden_keys)
    positions = config_value(config, arch.positions_keys, 512) - arch.position_offset

    pooling = overrides.pooling
    if pooling is not None:
        canonical = canonical_pooling(pooling)
        if canonical is None:
            raise UnsupportedModelError(
                f"unknown pooling '{pooling}'", fix=f"use one of: {', '.join(POOLING_MODES)}", where="--pooling"
            )
        pooling = canonical
    st_config = folder / "config_sentence_transformers.json"
    st_meta = read_json(st_config) if st_config.is_file() else {}
    # The model's own Matryoshka width (SentenceTransformer(truncate_dim=...) saved in its config) is the default.
    dims = overrides.dims if overrides.dims is not None else st_meta.get("truncate_dim")
    chain = read_chain(folder, modules, hidden, pooling).with_overrides(pooling, overrides.normalize, dims)

    max_seq_len = overrides.max_seq_len
    if max_seq_len is not None:
        if max_seq_len < 1 or max_seq_len > positions:
            raise UnsupportedModelError(
                f"--max-seq-len {max_seq_len} is outside what the model's position embeddings address (1..{positions})",
                fix=f"pass --max-seq-len {positions} or less", where=str(config_path),
            )
    else:
        max_seq_len = min(_max_seq_len_from_files(folder, model_dir) or positions, positions)

    prompts = dict(st_meta.get("prompts") or {})
    default_prompt_name = st_meta.get("default_prompt_name")
    if task is not None:
        # The task's instruction is the prompt a text model built from this export prepends, as the model's own
        # encode(task=...) does.
        instruction = task_prompt(config, prompts, task)
        if instruction is not None:
            prompts[task] = instruction
            default_prompt_name = task

    return ModelSpec(
        source=source,
        path=model_dir,
        root=folder,
        revision=revision,
        architecture=arch,
        hidden_size=hidden,
        max_positions=positions,
        vocab_size=int(config.get("vocab_size") or 0),
        chain=chain,
        max_seq_len=max_seq_len,
        has_st_metadata=bool(modules),
        prompts=prompts,
        default_prompt_name=default_prompt_name,
        trust_remote_code=trust_remote_code,
        native=native,
        task=task,
        tasks=task_adapters(config),
    )
