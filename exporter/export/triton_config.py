"""The Triton model configuration as typed dataclasses, rendered from templates/ and parsed back with Triton's
own protobuf (``tritonclient.grpc.model_config_pb2``) so nothing is written that Triton would not read.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ..errors import ConfigError

from ..tensor_types import LIBTORCH_TYPES
# Both of the pytorch backend's platforms (TorchScript and torch.export/AOTInductor) take the same tensor types.
TORCH_PLATFORMS = ("pytorch_libtorch", "torch_aoti")
_KINDS = ("KIND_CPU", "KIND_GPU", "KIND_AUTO", "KIND_MODEL")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def _fail(name: str, field_name: str, problem: str, fix: str) -> ConfigError:
    return ConfigError(problem, fix=fix, where=f"model '{name}', field {field_name}")


@dataclass(frozen=True)
class TensorConfig:
    name: str
    data_type: str
    dims: tuple[int, ...]
    # Ragged batching: requests of different shapes are merged into one flat tensor of all their elements.
    allow_ragged_batch: bool = False
    # The shape the model sees per batch item; () turns a string input's [1] into one string per item.
    reshape: tuple[int, ...] | None = None


# Triton's batch_input kinds; the types a batch input may have (the server refuses others at load).
BATCH_INPUT_KINDS = ("BATCH_ELEMENT_COUNT", "BATCH_ACCUMULATED_ELEMENT_COUNT",
                     "BATCH_ACCUMULATED_ELEMENT_COUNT_WITH_ZERO", "BATCH_MAX_ELEMENT_COUNT_AS_SHAPE",
                     "BATCH_ITEM_SHAPE", "BATCH_ITEM_SHAPE_FLATTEN")
BATCH_INPUT_TYPES = ("TYPE_INT32", "TYPE_FP32")


@dataclass(frozen=True)
class BatchInput:
    """A tensor Triton computes from the merged batch (e.g. each request's end offset) and passes as an extra
    model input named ``target_name``."""

    kind: str
    target_name: str
    data_type: str
    source_input: str


@dataclass(frozen=True)
class InstanceGroup:
    count: int = 1
    kind: str = "KIND_CPU"
    gpus: tuple[int, ...] = ()


@dataclass(frozen=True)
class DynamicBatching:
    max_queue_delay_microseconds: int = 100
    preferred_batch_size: tuple[int, ...] = ()


@dataclass(frozen=True)
class Warmup:
    name: str
    batch_size: int
    inputs: tuple[TensorConfig, ...]


@dataclass(frozen=True)
class TritonModelConfig:
    name: str
    max_batch_size: int
    inputs: tuple[TensorConfig, ...]
    outputs: tuple[TensorConfig, ...]
    platform: str | None = "pytorch_libtorch"
    backend: str | None = None
    default_model_filename: str | None = None
    instance_group: tuple[InstanceGroup, ...] = (InstanceGroup(),)
    dynamic_batching: DynamicBatching | None = DynamicBatching()
    parameters: tuple[tuple[str, str], ...] = ()
    warmup: tuple[Warmup, ...] = field(default=())
    batch_inputs: tuple[BatchInput, ...] = ()

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        n = self.name
        if not _NAME.match(n) or ".." in n:
            raise _fail(n, "name", f"invalid model name '{n}'",
                        "use letters, digits, '_', '-', '.' only, starting with a letter or digit")
        if self.max_batch_size < 0:
            raise _fail(n, "max_batch_size", f"max_batch_size {self.max_batch_size} is negative",
                        "use 0 (no batching) or a positive batch size")
        if not self.inputs or not self.outputs:
            raise _fail(n, "input/output", "a model needs at least one input and one output", "declare them")
        for kind, tensors in (("input", self.inputs), ("output", self.outputs)):
            seen = set()
            for t in tensors:
                if t.name in seen:
                    raise _fail(n, f"{kind} '{t.name}'", "duplicate tensor name", "give each tensor its own name")
                seen.add(t.name)
                if (self.platform == "pytorch_libtorch" and t.data_type == "TYPE_STRING" and kind == "input"
                        and (self.max_batch_size == 0 or t.reshape == ())):
                    pass  # forward() gets a List[str] of every merged request's text (NVIDIA's backend)
                elif t.data_type == "TYPE_STRING" and self.platform == "pytorch_libtorch":
                    raise _fail(n, f"{kind} '{t.name}'.data_type",
                                "a TYPE_STRING output is given the first request's strings under dynamic batching; "
                                "a batched TYPE_STRING input needs reshape { shape: [ ] } to load"
                                if kind == "input" else "TYPE_STRING outputs are split wrongly across merged "
                                "requests by the LibTorch backend",
                                "declare a string input as dims [ 1 ] with reshape { shape: [ ] }; return tensors")
                elif self.platform in TORCH_PLATFORMS and t.data_type not in LIBTORCH_TYPES:
                    raise _fail(n, f"{kind} '{t.name}'.data_type",
                                f"{t.data_type} is not supported by the LibTorch backend",
                                f"use one of {', '.join(LIBTORCH_TYPES)}")
                if not t.dims or any(d == 0 or d < -1 for d in t.dims):
                    raise _fail(n, f"{kind} '{t.name}'.dims", f"dims {list(t.dims)} are invalid",
                                "use positive sizes or -1 for a variable size; with max_batch_size > 0 leave "
                                "the batch dimension out")
        for g in self.instance_group:
            if g.count < 1 or g.kind not in _KINDS:
                raise _fail(n, "instance_group", f"instance group {g} is invalid",
                            f"count >= 1 and kind one of {', '.join(_KINDS)}")
        if self.dynamic_batching is not None:
            db = self.dynamic_batching
            if db.max_queue_delay_microseconds < 0:
                raise _fail(n, "dynamic_batching.max_queue_delay_microseconds", "the delay is negative", "use >= 0")
            bad = [b for b in db.preferred_batch_size if b < 1 or b > self.max_batch_size]
            if bad:
                raise _fail(n, "dynamic_batching.preferred_batch_size",
                            f"preferred sizes {bad} are outside 1..max_batch_size ({self.max_batch_size})",
                            "choose sizes no larger than max_batch_size")
            if self.max_batch_size == 0:
                raise _fail(n, "dynamic_batching", "dynamic batching needs max_batch_size > 0",
                            "set max_batch_size or drop dynamic batching")
        self._validate_ragged()
        targets = {b.target_name for b in self.batch_inputs}
        for w in self.warmup:
            for t in w.inputs:
                if t.name in targets:
                    raise _fail(n, f"model_warmup '{w.name}'.inputs '{t.name}'",
                                "it is a batch_input target, which Triton computes from the batch",
                                "leave batch_input targets out of model_warmup")
                if any(d < 1 for d in t.dims):
                    raise _fail(n, f"model_warmup '{w.name}'.inputs '{t.name}'.dims",
                                f"warmup dims {list(t.dims)} are not fully specified",
                                "give every warmup dimension a positive size (batch dimension excluded)")

    def _validate_ragged(self) -> None:
        n = self.name
        ragged = [t.name for t in self.inputs if t.allow_ragged_batch]
        if (ragged or self.batch_inputs) and self.max_batch_size == 0:
            what = f"input '{ragged[0]}'.allow_ragged_batch" if ragged else "batch_input"
            raise _fail(n, what, "ragged batching and batch inputs need Triton to batch requests (max_batch_size 0)",
                        "set max_batch_size > 0 (and dynamic_batching), or drop allow_ragged_batch and batch_input")
        inputs = {t.name for t in self.inputs}
        seen = set()
        for b in self.batch_inputs:
            where = f"batch_input '{b.target_name}'"
            if b.kind not in BATCH_INPUT_KINDS:
                raise _fail(n, f"{where}.kind", f"unknown batch input kind {b.kind}",
                            f"use one of {', '.join(BATCH_INPUT_KINDS)}")
            if b.data_type not in BATCH_INPUT_TYPES:
                raise _fail(n, f"{where}.data_type", f"Triton refuses {b.data_type} for a batch input at load",
                            f"use {' or '.join(BATCH_INPUT_TYPES)} (the model casts it)")
            if b.source_input not in inputs:
                raise _fail(n, f"{where}.source_input", f"'{b.source_input}' is not an input of the model",
                            f"name one of the config inputs ({', '.join(sorted(inputs))})")
            if b.target_name in inputs or b.target_name in seen:
                raise _fail(n, f"{where}.target_name", "the name is already taken by an input or batch input",
                            "give each batch input its own forward() argument name")
            seen.add(b.target_name)

    def render(self, source: str | None = None, template: str = "config.pbtxt.j2") -> str:
        """config.pbtxt text; raises ConfigError if Triton's protobuf does not accept it."""
        from .. import __version__

        text = _template(template).render(c=self, source=source, tool_version=__version__)
        parse_pbtxt(text, where=f"rendered config of model '{self.name}'")
        return text + ("" if text.endswith("\n") else "\n")


    @classmethod
    def from_proto(cls, config, where: str = "config.pbtxt") -> "TritonModelConfig":
        """The typed config of a parsed ``ModelConfig``; ConfigError naming the fields it holds that this type does
        not (an edit through the template would drop them)."""
        from tritonclient.grpc import model_config_pb2 as pb

        def tensor(t) -> TensorConfig:
            return TensorConfig(t.name, pb.DataType.Name(t.data_type), tuple(t.dims),
                                allow_ragged_batch=getattr(t, "allow_ragged_batch", False),
                                reshape=tuple(t.reshape.shape) if t.HasField("reshape") else None)

        warmup = tuple(Warmup(w.name, w.batch_size, tuple(
            TensorConfig(key, pb.DataType.Name(v.data_type), tuple(v.dims)) for key, v in w.inputs.items()))
            for w in config.model_warmup)
        typed = cls(
            name=config.name, max_batch_size=config.max_batch_size,
            inputs=tuple(tensor(t) for t in config.input), outputs=tuple(tensor(t) for t in config.output),
            platform=config.platform or None, backend=config.backend or None,
            default_model_filename=config.default_model_filename or None,
            instance_group=tuple(InstanceGroup(g.count, pb.ModelInstanceGroup.Kind.Name(g.kind), tuple(g.gpus))
                                 for g in config.instance_group),
            dynamic_batching=DynamicBatching(config.dynamic_batching.max_queue_delay_microseconds,
                                             tuple(config.dynamic_batching.preferred_batch_size))
            if config.HasField("dynamic_batching") else None,
            parameters=tuple((k, v.string_value) for k, v in config.parameters.items()),
            warmup=warmup,
            batch_inputs=tuple(BatchInput(pb.BatchInput.Kind.Name(b.kind), b.target_name[0],
                                          pb.DataType.Name(b.data_type), b.source_input[0])
                               for b in config.batch_input),
        )
        again = parse_pbtxt(typed.render(), where=where)
        if again != config:
            lost = sorted({f.name for f, _ in config.ListFields()} - {f.name for f, _ in again.ListFields()}) or \
                sorted(f.name for f, v in config.ListFields() if getattr(again, f.name) != v)
            raise ConfigError(f"the config holds settings tei-export does not edit ({', '.join(lost)})",
                              fix="edit this config.pbtxt by hand, or export the model again", where=where)
        return typed


def parse_typed(text: str, where: str = "config.pbtxt") -> tuple[TritonModelConfig, str | None]:
    """config.pbtxt text as the typed config, and the source its tei-export header names (kept when it is rendered
    again)."""
    header = text.splitlines()[0] if text else ""
    match = re.match(r"# Generated by tei-export \S+ from (.+)\. Triton model configuration:", header)
    return TritonModelConfig.from_proto(parse_pbtxt(text, where=where), where=where), \
        (match.group(1) if match else None)


@lru_cache(maxsize=None)  # a handful of templates, each parsed once
def _template(name: str = "config.pbtxt.j2"):
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())), undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True, autoescape=False,
    ).get_template(name)


def templates_dir() -> Path:
    """templates/ in a source checkout, or the copy installed in the wheel as ``exporter/templates``."""
    here = Path(__file__).resolve().parents[1]  # the exporter package
    for candidate in (here / "templates", here.parent / "templates"):
        if (candidate / "config.pbtxt.j2").is_file():
            return candidate
    raise ConfigError("the config.pbtxt templates are missing from the installation",
                      fix="reinstall tei-export (pip install .)", where=str(here))


def parse_pbtxt(text: str, where: str = "config.pbtxt"):
    """Parse ``text`` into Triton's ``ModelConfig`` protobuf; ConfigError with the parser's message if invalid."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    try:
        return text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as err:
        raise ConfigError(f"Triton's ModelConfig protobuf rejects it: {err}",
                          fix="fix the field named in the message", where=where) from None


def read_config(path: Path):
    """The ModelConfig protobuf of a config.pbtxt file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read the model config: {err.strerror}",
                          fix="export the model first (tei-export trace)", where=str(path)) from None
    return parse_pbtxt(text, where=str(path))
