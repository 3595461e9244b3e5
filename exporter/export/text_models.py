"""Text in, embeddings out beside a token model: ``<name>_text``, one TorchScript model (``--tokenizer graph``), or
``<name>_tokenizer`` (Python backend) and ``<name>_text`` (ensemble) (``--tokenizer python``).

``graph`` (the default where the model's tokenizer family is reproduced exactly, see :mod:`exporter.text_graph`)
writes ``<name>_text`` as a ``pytorch_libtorch`` model: a ``TYPE_STRING`` input that forward() gets as a
``List[str]`` of every merged request's text, the tokenizer scripted into the same ``model.pt`` as the encoder, and
the texts encoded as a ragged export encodes them. No Python model, no ensemble, no ``tokenizers`` in the server.
Invalid UTF-8 is read as ``bytes.decode("utf-8", "replace")`` reads it (the Python tokenizer model refuses it).

Prompts: every text model puts one prompt of ``config_sentence_transformers.json`` before each text, the one
``trace --prompt-name NAME`` names, else the model's ``default_prompt_name`` (none when it has neither). The graph
model bakes the prompt's text into ``model.pt``; the Python models name it in their config's ``PROMPT_NAME``
parameter. A query model and a document model are two exports (``--name``). ``tei_export.json`` records the name
(``text_prompt_name``), and :func:`served_prompt` reads what a written text model applies, for verify and soak.

The tokenizer model runs ``text_backend/tokenizer_model.py`` on the model's own ``tokenizer.json``; the ensemble
chains it to the token model, so a client sends UTF-8 strings and gets the embedding back.

A ragged token model takes one text per request, and an ensemble would pass a request of N texts on as one [N, L]
request (Triton splits the output back by each request's first dimension, so N texts must arrive as N requests).
Beside a ragged model ``<name>_text`` is therefore a Python model running the same file, which sends each text to the
token model as a request of its own (BLS) and returns the rows in order; there is no ``<name>_tokenizer``.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import RepositoryError, UnsupportedModelError
from ..text_backend import TOKENIZER_MODEL_PY
from ..tokens import DEFAULT_BUCKETS
from .metadata import ExportMetadata
from .repository import plan_version, staged_version
from .spec import source_label
from .batching import DEFAULT_TOKEN_BUDGET
from .triton_config import DynamicBatching, InstanceGroup, TensorConfig, TritonModelConfig, Warmup

TEXT_INPUT = "text"
SETTINGS_FILE = "text_settings.json"
GRAPH_FILE = "text_graph.json"  # beside the graph text model's model.pt: what its tokenizer was derived from
TOKENIZER_MODES = ("graph", "python")


@dataclass(frozen=True)
class EnsembleStep:
    model_name: str
    input_map: tuple[tuple[str, str], ...]  # step input -> ensemble tensor
    output_map: tuple[tuple[str, str], ...]  # step output -> ensemble tensor


@dataclass(frozen=True)
class EnsembleConfig(TritonModelConfig):
    steps: tuple[EnsembleStep, ...] = ()


@dataclass(frozen=True)
class TextPrompt:
    """The prompt a text model puts before every text: its name in the model's prompts (None when unknown, as in
    a graph text model written before names were recorded) and its text ("" for none)."""

    name: str | None = None
    text: str = ""

    def encode_kwargs(self) -> dict:
        """How ``SentenceTransformer.encode`` is told the same prompt: by name where known, else by its text."""
        return {"prompt_name": self.name} if self.name else {"prompt": self.text}


def resolve_prompt_name(requested: str | None, prompts: dict[str, str], default: str | None) -> str | None:
    """The prompt name the text models get: ``requested`` (``--prompt-name``), checked against the model's prompts,
    else the model's default prompt name."""
    if requested is None:
        return default
    if requested not in prompts:
        have = (f"its prompts are {', '.join(sorted(prompts))}" if prompts else
                "it has none (no 'prompts' in config_sentence_transformers.json)")
        raise UnsupportedModelError(f"the model has no prompt named '{requested}': {have}",
                                    fix=f"use one of {', '.join(sorted(prompts))}" if prompts else
                                    "drop --prompt-name, or add the prompt to config_sentence_transformers.json",
                                    where="--prompt-name")
    return requested


def served_prompt(repo: Path, name: str) -> TextPrompt:
    """The prompt that ``<name>_text`` (beside token model ``name``) applies, read from what was written: the
    graph model's ``text_graph.json``, or the Python model's ``PROMPT_NAME`` parameter (added by ``--prompt-name``
    or by hand) and its settings' default."""
    from .repository import latest_version_dir
    from .triton_config import read_config

    repo = Path(repo)
    for model in (text_name(name), tokenizer_name(name)):
        try:
            version_dir = latest_version_dir(repo / model)
        except RepositoryError:  # no such model, or no version folder
            continue
        if (version_dir / GRAPH_FILE).is_file():
            graph = json.loads((version_dir / GRAPH_FILE).read_text(encoding="utf-8"))
            return TextPrompt(graph.get("prompt_name"), graph.get("prompt") or "")
        if (version_dir / SETTINGS_FILE).is_file():
            data = json.loads((version_dir / SETTINGS_FILE).read_text(encoding="utf-8"))
            parameters = read_config(repo / model / "config.pbtxt").parameters
            chosen = (parameters["PROMPT_NAME"].string_value if "PROMPT_NAME" in parameters
                      else data.get("default_prompt_name")) or None
            return TextPrompt(chosen, (data.get("prompts") or {}).get(chosen, "") if chosen else "")
    raise UnsupportedModelError(f"no text model beside {name}", where=str(repo / text_name(name)),
                                fix="export with trace --with-tokenizer")


def tokenizer_name(name: str) -> str:
    return f"{name}_tokenizer"


def text_name(name: str) -> str:
    return f"{name}_text"


def bucket_sizes(buckets: tuple[int, ...] | None, max_seq_len: int) -> tuple[int, ...]:
    """The length buckets, capped at max_seq_len (which is always a bucket)."""
    chosen = tuple(buckets) if buckets else DEFAULT_BUCKETS
    if any(b < 1 for b in chosen):
        raise UnsupportedModelError(f"length buckets {list(chosen)} must be positive", fix="e.g. --buckets 16,64,512",
                                    where="--buckets")
    return tuple(sorted({b for b in chosen if b < max_seq_len} | {max_seq_len}))


def tokenizer_config(token_config: TritonModelConfig, kind: str = "KIND_CPU",
                     prompt_name: str | None = None) -> TritonModelConfig:
    """A Python-backend model: ``text`` (BYTES [1]) in, the token model's inputs out (same names and types)."""
    params = (("PROMPT_NAME", prompt_name),) if prompt_name is not None else ()
    return TritonModelConfig(
        name=tokenizer_name(token_config.name), max_batch_size=token_config.max_batch_size,
        inputs=(TensorConfig(TEXT_INPUT, "TYPE_STRING", (1,)),),
        outputs=tuple(TensorConfig(t.name, t.data_type, (-1,)) for t in token_config.inputs),
        platform=None, backend="python", instance_group=(InstanceGroup(1, kind),),
        dynamic_batching=DynamicBatching(0), parameters=params)


def ragged_text_config(token_config: TritonModelConfig, kind: str = "KIND_CPU",
                       prompt_name: str | None = None) -> TritonModelConfig:
    """A Python-backend model: ``text`` (BYTES [1]) in, the ragged token model's ``embedding`` out."""
    params = (("PROMPT_NAME", prompt_name),) if prompt_name is not None else ()
    return TritonModelConfig(
        name=text_name(token_config.name), max_batch_size=token_config.max_batch_size,
        inputs=(TensorConfig(TEXT_INPUT, "TYPE_STRING", (1,)),), outputs=(token_config.outputs[0],),
        platform=None, backend="python", instance_group=(InstanceGroup(1, kind),),
        dynamic_batching=DynamicBatching(0), parameters=params)


def ensemble_config(token_config: TritonModelConfig) -> EnsembleConfig:
    """``text`` -> tokenizer -> token model -> ``embedding``."""
    names = tuple((t.name, t.name) for t in token_config.inputs)
    embedding = token_config.outputs[0]
    return EnsembleConfig(
        name=text_name(token_config.name), max_batch_size=token_config.max_batch_size,
        inputs=(TensorConfig(TEXT_INPUT, "TYPE_STRING", (1,)),), outputs=(embedding,),
        platform="ensemble", instance_group=(), dynamic_batching=None,
        steps=(EnsembleStep(tokenizer_name(token_config.name), ((TEXT_INPUT, TEXT_INPUT),), names),
               EnsembleStep(token_config.name, names, ((embedding.name, embedding.name),))))


def settings(meta: ExportMetadata, tokenizer, buckets: tuple[int, ...],
             token_config: TritonModelConfig | None = None) -> dict:
    """text_settings.json; ``token_config`` (a ragged token model) makes the model send texts to it (BLS)."""
    import tokenizers

    data = {"max_seq_len": meta.max_seq_len, "buckets": list(buckets),
            "pad_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
            "padding_side": getattr(tokenizer, "padding_side", "right"), "prompts": dict(meta.prompts),
            "default_prompt_name": meta.default_prompt_name, "tokenizers_version": tokenizers.__version__}
    if token_config is not None:
        ids = token_config.inputs[0]
        data["token_model"] = {"name": token_config.name, "input": ids.name, "data_type": ids.data_type,
                               "output": token_config.outputs[0].name}
    return data


def text_model_names(name: str, ragged: bool = False, mode: str = "python") -> tuple[str, ...]:
    """The models written beside token model ``name``."""
    return (text_name(name),) if ragged or mode == "graph" else (tokenizer_name(name), text_name(name))


def tokenizer_mode(mode: str | None, tokenizer) -> str:
    """``graph`` or ``python`` for ``tokenizer`` (a transformers tokenizer): ``mode`` as asked, checked; None picks
    graph when the graph reproduces the tokenizer exactly, else python. Asking graph for a tokenizer it cannot
    reproduce raises UnsupportedModelError naming the part."""
    from ..text_graph.families import unsupported

    if mode not in (None, *TOKENIZER_MODES):
        raise UnsupportedModelError(f"unknown tokenizer mode '{mode}'", fix=f"use one of {', '.join(TOKENIZER_MODES)}",
                                    where="--tokenizer")
    if mode == "python":
        return mode
    backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
    problem = (UnsupportedModelError("the model's tokenizer has no fast (tokenizer.json) version",
                                     fix="export with --tokenizer python", where="--tokenizer graph")
               if backend is None else unsupported(backend))
    if problem is not None and mode == "graph":
        raise problem
    return "python" if problem is not None else "graph"


def plan_text_models(repo: Path, name: str, version: int, force: bool, ragged: bool = False,
                     mode: str | None = None, source: Path | None = None) -> None:
    """Before any slow work: refuse (like the token model) when a text model's version exists and not --force, or
    when ``mode`` graph is asked for a tokenizer it cannot reproduce. ``source`` (the model folder) decides the
    default ``mode``."""
    if mode != "python" and source is not None:
        from transformers import AutoTokenizer

        mode = tokenizer_mode(mode, AutoTokenizer.from_pretrained(str(source)))
    for model in text_model_names(name, ragged, mode or "python"):
        plan_version(Path(repo), model, version, force)


def prepare_text_models(token_config: TritonModelConfig, meta: ExportMetadata, tokenizer, mode: str | None = None,
                        exported=None, reference=None, spec=None, token_budget: int | None = None):
    """What can fail in making the text models, done before the token model is written so that such a failure
    leaves the repository as it was: graph, the ``(module, provenance)`` of ``<name>_text`` built around ``exported``
    (the token model's module) and checked against ``reference``; python, None once the tokenizer is known to have
    the fast version the Python models need."""
    if tokenizer_mode(mode, tokenizer) == "graph" and exported is not None:
        from ..text_graph.text_model import build_checked_text_model

        return build_checked_text_model(tokenizer, exported, reference, spec, meta,
                                        token_budget or DEFAULT_TOKEN_BUDGET)
    if not getattr(tokenizer, "is_fast", False):
        raise UnsupportedModelError("the model's tokenizer has no fast (tokenizer.json) version",
                                    fix="export without --with-tokenizer and tokenize on the client",
                                    where="--with-tokenizer")
    return None


def write_text_models(repo: Path, token_config: TritonModelConfig, meta: ExportMetadata, tokenizer,
                      version: int = 1, force: bool = False, buckets: tuple[int, ...] | None = None,
                      kind: str = "KIND_CPU", graph=None) -> list[Path]:
    """Write the text model(s) into ``repo``, each all-or-nothing; returns their folders. ``graph`` (from
    :func:`prepare_text_models`): ``<name>_text`` alone; None: the Python models, ``<name>_tokenizer`` and
    ``<name>_text`` (for a ragged token model ``<name>_text`` alone)."""
    if graph is not None:
        return [write_graph_text_model(Path(repo), token_config, meta, graph, version, force)]
    source = source_label(meta.source)
    if meta.variant == "ragged":
        return [_write_python_model(Path(repo), ragged_text_config(token_config, kind, meta.text_prompt_name),
                                    "ragged_text.pbtxt.j2",
                                    settings(meta, tokenizer, (), token_config), tokenizer, version, force, source)]
    tok_cfg, ens_cfg = tokenizer_config(token_config, kind, meta.text_prompt_name), ensemble_config(token_config)
    ens_text = ens_cfg.render(source=source, template="ensemble.pbtxt.j2")
    ens_target = plan_version(Path(repo), ens_cfg.name, version, force)
    data = settings(meta, tokenizer, bucket_sizes(buckets, meta.max_seq_len))
    written = [_write_python_model(Path(repo), tok_cfg, "tokenizer.pbtxt.j2", data, tokenizer, version, force,
                                   source)]
    with staged_version(ens_target, force) as staging:
        (staging / "config.pbtxt").write_text(ens_text, encoding="utf-8")
    return written + [ens_target.model_dir]


def _write_python_model(repo: Path, config: TritonModelConfig, template: str, data: dict, tokenizer, version: int,
                        force: bool, source: str | None) -> Path:
    """A model running text_backend/tokenizer_model.py, all-or-nothing; returns its folder."""
    text = config.render(source=source, template=template)
    target = plan_version(repo, config.name, version, force)
    with staged_version(target, force) as staging:
        version_dir = staging / str(version)
        shutil.copyfile(TOKENIZER_MODEL_PY, version_dir / "model.py")
        tokenizer.backend_tokenizer.save(str(version_dir / "tokenizer.json"))
        (version_dir / SETTINGS_FILE).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        (staging / "config.pbtxt").write_text(text, encoding="utf-8")
    return target.model_dir


def graph_text_config(token_config: TritonModelConfig, warmup: bool = True) -> TritonModelConfig:
    """``text`` (TYPE_STRING, one string per batch item) in, the token model's ``embedding`` out, served by the
    LibTorch backend like the token model (same instances, batching and threads); warmed up with an empty text."""
    text = TensorConfig(TEXT_INPUT, "TYPE_STRING", (1,), reshape=())
    return TritonModelConfig(
        name=text_name(token_config.name), max_batch_size=token_config.max_batch_size, inputs=(text,),
        outputs=(token_config.outputs[0],), platform="pytorch_libtorch",
        instance_group=token_config.instance_group, dynamic_batching=token_config.dynamic_batching,
        parameters=token_config.parameters,
        warmup=(Warmup("empty_text", 1, (TensorConfig(TEXT_INPUT, "TYPE_STRING", (1,)),)),) if warmup else ())


def write_graph_text_model(repo: Path, token_config: TritonModelConfig, meta: ExportMetadata, graph,
                           version: int = 1, force: bool = False) -> Path:
    """``<name>_text`` as one TorchScript model (tokenizer + ragged encoder): ``graph`` is its checked
    ``(module, provenance)``."""
    config = graph_text_config(token_config, warmup=bool(token_config.warmup))
    text = config.render(source=source_label(meta.source), template="graph_text.pbtxt.j2")
    target = plan_version(repo, config.name, version, force)
    module, provenance = graph
    with staged_version(target, force) as staging:
        version_dir = staging / str(version)
        module.save(str(version_dir / "model.pt"))
        (version_dir / GRAPH_FILE).write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
        (staging / "config.pbtxt").write_text(text, encoding="utf-8")
    return target.model_dir
