"""`tei-export trace` as a library call: model source -> checked TorchScript + config.pbtxt in a model repository."""
from __future__ import annotations

import copy
import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch

from ..checks.parity import ParityReport, tolerance_for
from ..errors import ParityError, UnsupportedModelError
from .batching import BATCHING_MODES, DEFAULT_TOKEN_BUDGET, OFFSETS_INPUT
from .metadata import TOKENIZER_DIR, ExportMetadata, library_versions
from .precision import (PrecisionOptions, apply_precision, check_target, fast_path_warning, merge_dependence_warning,
                        quality_gate, quality_header, record_quality, recorded_dtype, resolve_precision,
                        validate_precision)
from .reference import load_reference
from .repository import VersionTarget, default_model_name, plan_version, staged_version
from .spec import ModelSpec, SpecOverrides, read_spec, source_label
from .triton_config import TritonModelConfig
from .variants import BuildContext, Variant, variant_for

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
FORMATS = ("torchscript", "pt2")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ExportOptions:
    out: Path = Path("model_repository")
    name: str | None = None
    version: int = 1
    force: bool = False
    # what the model computes
    pooling: str | None = None
    normalize: bool | None = None
    max_seq_len: int | None = None
    dims: int | None = None  # Matryoshka: the first N values of each embedding, normalised again
    revision: str | None = None
    trust_remote_code: bool = False
    task: str | None = None  # the task adapter merged into the weights (export/adapters.py)
    int32: bool = False
    token_embeddings: bool = False
    dtype: str = "float32"
    precision: str = "fp32"  # or "bf16"/"int8": held to a quality gate against fp32 (exporter.export.precision)
    precision_options: PrecisionOptions = PrecisionOptions()
    device: str = "cpu"
    format: str = "torchscript"  # or "pt2": torch.export + AOTInductor, platform torch_aoti (Triton 26.03+)
    batching: str = "padded"  # or "ragged" (BATCHING_MODES); padded is the default any client can send (README)
    ragged_token_budget: int | None = None  # rows x padded length per encoder call; None: DEFAULT_TOKEN_BUDGET
    # how Triton serves it
    max_batch_size: int = 64
    instances: int = 1
    kind: str | None = None  # instance_group kind: "cpu" or "gpu"; default follows --device
    max_queue_delay_us: int = 100
    preferred_batch_sizes: tuple[int, ...] = ()
    intra_op_threads: int | None = None
    inter_op_threads: int | None = None
    inference_mode: bool = True
    disable_optimized_execution: bool = False
    warmup: bool = True
    # text in: <name>_tokenizer (Python backend) + <name>_text (ensemble) beside the token model
    with_tokenizer: bool = False
    buckets: tuple[int, ...] = ()
    tokenizer: str | None = None  # "graph" (one TorchScript text model) or "python"; None: graph where supported
    # the prompt of config_sentence_transformers.json baked into the text model(s); None: the model's default prompt
    prompt_name: str | None = None

    @property
    def instance_kind(self) -> str:
        return self.kind or ("gpu" if self.device.startswith("cuda") else "cpu")

    @property
    def ragged(self) -> bool:
        return self.batching == "ragged"

    @property
    def token_budget(self) -> int:
        return self.ragged_token_budget if self.ragged_token_budget is not None else DEFAULT_TOKEN_BUDGET

    def validate(self) -> None:
        if self.format not in FORMATS:
            raise UnsupportedModelError(f"unknown format '{self.format}'", fix=f"use one of {', '.join(FORMATS)}",
                                        where="--format")
        self._validate_batching()
        validate_precision(self)
        if self.device.startswith("cuda") and self.instance_kind != "gpu":
            raise UnsupportedModelError("--device cuda traces on the GPU, but the instance group says KIND_CPU",
                                        fix="add --kind gpu (a model traced on CUDA runs on a GPU instance)",
                                        where="--kind")
        if self.dtype not in DTYPES:
            raise UnsupportedModelError(f"unknown dtype '{self.dtype}'", fix=f"use one of {', '.join(DTYPES)}",
                                        where="--dtype")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise UnsupportedModelError("--device cuda was asked for but no CUDA device is available here",
                                        fix="run on a machine with an NVIDIA GPU and a CUDA build of torch, or use "
                                            "--device cpu", where="--device")
        if self.dtype == "float16" and not self.device.startswith("cuda"):
            raise UnsupportedModelError("float16 is only exported for GPUs (CPU half-precision matmuls are slow)",
                                        fix="use --device cuda, or --dtype float32 on CPU (bfloat16 on CPU is "
                                            "written only if it passes its parity bound)", where="--dtype")
        if self.max_batch_size < 1:
            raise UnsupportedModelError("max_batch_size must be at least 1", fix="pass --max-batch-size 1 or more",
                                        where="--max-batch-size")
        if self.instances < 1:
            raise UnsupportedModelError("instance count must be at least 1", fix="pass --instances 1 or more",
                                        where="--instances")

    def _validate_batching(self) -> None:
        if self.batching not in BATCHING_MODES:
            raise UnsupportedModelError(f"unknown batching '{self.batching}'",
                                        fix=f"use one of {', '.join(BATCHING_MODES)}",
                                        where="--batching")
        if self.prompt_name is not None and not self.with_tokenizer:
            raise UnsupportedModelError("--prompt-name bakes a prompt into the text model, and there is none without "
                                        "--with-tokenizer (a token model is sent tokens that already hold any prompt)",
                                        fix="add --with-tokenizer, or drop --prompt-name", where="--prompt-name")
        if not self.ragged and self.ragged_token_budget is not None:
            raise UnsupportedModelError("--ragged-token-budget sizes the chunks of a ragged model",
                                        fix="add --batching ragged, or drop --ragged-token-budget",
                                        where="--ragged-token-budget")

    @property
    def variant(self) -> Variant:
        return variant_for(self)


@dataclass
class ExportResult:
    target: VersionTarget
    spec: ModelSpec
    config: TritonModelConfig
    metadata: ExportMetadata
    parity: ParityReport
    files: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "model": self.target.name,
            "version": self.target.version,
            "model_dir": str(self.target.model_dir),
            "files": [str(p) for p in self.files],
            "batching": self.metadata.batching,
            "variant": self.metadata.variant,
            "modules": self.metadata.modules,
            "pooling": self.spec.pooling,
            "normalize": self.spec.normalize,
            "max_seq_len": self.spec.max_seq_len,
            "inputs": [t.name for t in self.config.inputs],
            "outputs": [t.name for t in self.config.outputs],
            "parity": self.parity.to_dict(),
            "quality": self.metadata.parity.get("quality"),
            "warnings": list(self.warnings),
        }


CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_bf16_warning(device: str = "cpu", cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> str | None:
    """A warning when a bf16 export will run on a CPU without native bf16 (avx512_bf16 / amx_bf16): it still
    works, emulated, but is usually slower than fp32 there. None when the flags are present or cannot be read."""
    if not device.startswith("cpu"):
        return None
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[-1].split())
    if not flags or any(f in flags for f in CPU_BF16_FLAGS):
        return None
    return ("this CPU has no native bfloat16 (neither avx512_bf16 nor amx_bf16 in /proc/cpuinfo): the bf16 model "
            "is exported and checked, but will likely run slower than --dtype float32 here")


def _say(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)


def _sentences_case(report: ParityReport, exported, variant: Variant, ctx: BuildContext) -> None:
    """Text through the reference's own tokenizer and ``encode()`` vs the export on the same tokens, as the variant's
    client sends them (a padded batch, or each text unpadded and packed as the backend merges them)."""
    texts = ["A man is eating food.", "The quick brown fox jumps over the lazy dog near the river bank today.",
             "Embeddings!"]
    features = ctx.reference.preprocess(texts)
    expected = torch.from_numpy(ctx.reference.encode(texts)).float()
    args = variant.sentence_args(features, ctx.spec, ctx.input_dtype)
    with torch.inference_mode():
        out = exported(*(a.to(ctx.device) for a in args))
    report.add("encode() on sentences", expected, (out[0] if isinstance(out, tuple) else out).cpu(),
               seq_len=int(features["input_ids"].shape[1]))


def export_model(source: str, options: ExportOptions = ExportOptions(), progress: Progress | None = None
                 ) -> ExportResult:
    """Export ``source`` (hub id or folder) into ``options.out``; raises a TeiExportError subclass on bad input.

    Every check runs before anything is written; a failure leaves the repository as it was.
    """
    options.validate()
    options = resolve_precision(options)
    variant = options.variant
    warnings = [w for w in (fast_path_warning(options.precision),) if w]
    if options.dtype == "bfloat16":
        warning = cpu_bf16_warning(options.device)
        if warning:
            warnings.append(warning)
            _say(progress, f"warning: {warning}")
    _say(progress, f"reading {source}")
    spec = read_spec(source, SpecOverrides(options.pooling, options.normalize, options.max_seq_len, options.dims,
                                           options.task),
                     revision=options.revision, trust_remote_code=options.trust_remote_code)
    spec.require_task()
    variant.validate(options, spec.architecture)
    name = options.name or default_model_name(source)
    target = plan_version(Path(options.out), name, options.version, options.force)
    text_prompt_name = None
    if options.with_tokenizer:
        from .text_models import plan_text_models, resolve_prompt_name

        text_prompt_name = resolve_prompt_name(options.prompt_name, spec.prompts, spec.default_prompt_name)
        plan_text_models(Path(options.out), name, options.version, options.force, ragged=options.ragged,
                         mode=options.tokenizer, source=spec.path)
    config = variant.config(name, spec, options)
    config_text = config.render(source=source_label(source))

    _say(progress, "loading weights (sentence-transformers reference)")
    reference = load_reference(spec, device=options.device)
    encoder, int8_plan = apply_precision(reference.encoder, spec, options, reference.tokenizer, progress)
    ctx = _build_context(spec, reference, options, encoder)
    # --precision bf16|int8: the trace is checked against its own eager module with the fp32 bound; the quality
    # gate below holds that module to fp32 sentence-transformers.
    if options.precision != "fp32":
        checked, tolerance = check_target(options, reference, ctx.wrapper, variant.traced_inputs(spec))
        ctx = replace(ctx, reference=checked, tolerance=tolerance)
    example = variant.example(spec, options, ctx.pad_id)
    with tempfile.TemporaryDirectory(prefix="tei-export-build-") as scratch:
        _say(progress, variant.building)
        exported, saved = variant.build(ctx, example, Path(scratch))
        _say(progress, f"checking the {variant.name} model against sentence-transformers on "
                       f"{variant.check_count(ctx)} batches")
        report = variant.check(ctx, exported)
        _sentences_case(report, exported, variant, ctx)
        if not report.passed:
            raise ParityError(
                f"the {options.format} model differs from sentence-transformers; nothing was written\n"
                f"{report.table()}",
                report, fix="report this architecture; try --dtype float32 or another --max-seq-len",
            )
        quality = quality_gate(options, spec, reference, ctx.wrapper, variant.traced_inputs(spec), int8_plan,
                               progress)
        config_text = quality_header(config_text, quality)
        metadata = replace(_metadata(source, spec, options, variant, config, report, quality),
                           text_prompt_name=text_prompt_name)
        graph = None
        if options.with_tokenizer:  # built and checked before anything is written: a failure leaves no token model
            from .text_models import prepare_text_models

            graph = prepare_text_models(config, metadata, reference.tokenizer, options.tokenizer, exported, reference,
                                        spec, options.token_budget)
        # Decided by what was built: a tokenizer the graph cannot reproduce falls back to the Python text models,
        # whose rows come from the (padded or ragged) token model alone.
        warning = merge_dependence_warning(options.precision, options.ragged, graph is not None)
        if warning:
            warnings.append(warning)
        _say(progress, f"writing {target.version_dir}")
        model_file = _write_version(target, options.force, config_text, metadata, reference.tokenizer, variant,
                                    saved)
    files = [target.model_dir / "config.pbtxt", target.version_dir / model_file,
             target.version_dir / "tei_export.json", target.version_dir / TOKENIZER_DIR]
    if options.with_tokenizer:
        from .text_models import write_text_models

        _say(progress, f"writing the text model(s) beside {name} (text in, embeddings out)")
        files += write_text_models(Path(options.out), config, metadata, reference.tokenizer, options.version,
                                   options.force, options.buckets, config.instance_group[0].kind, graph)
    return ExportResult(target, spec, config, metadata, report, files, warnings)


def _build_context(spec: ModelSpec, reference, options: ExportOptions, encoder: torch.nn.Module) -> BuildContext:
    """The traceable wrapper (``encoder`` in the export's dtype, then the chain's head) and the facts every variant
    builds and checks with."""
    from .wrapper import wrapper_for

    if options.dtype != "float32":
        encoder = copy.deepcopy(encoder).to(DTYPES[options.dtype])
    out_dtype = torch.float16 if options.dtype == "float16" else torch.float32
    # A ragged export feeds its padded chunks without token types: zeros, as the tokenizer gives one text.
    wrapper = wrapper_for(spec, reference, encoder, token_embeddings=options.token_embeddings, output_dtype=out_dtype,
                          zero_token_types=options.ragged).to(options.device)
    tokenizer = reference.tokenizer
    return BuildContext(spec=spec, wrapper=wrapper, reference=reference,
                        pad_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
                        input_dtype=torch.int32 if options.int32 else torch.int64, output_dtype=out_dtype,
                        tolerance=tolerance_for(options.dtype, options.device), device=options.device,
                        max_batch_size=options.max_batch_size, token_budget=options.token_budget)


def _metadata(source: str, spec: ModelSpec, options: ExportOptions, variant: Variant, config: TritonModelConfig,
              report: ParityReport, quality) -> ExportMetadata:
    return ExportMetadata(
        source=source, source_path=str(spec.root), revision=spec.revision, model_type=spec.model_type,
        pooling=spec.pooling, normalize=spec.normalize, max_seq_len=spec.max_seq_len,
        hidden_size=spec.embedding_width, input_names=variant.client_inputs(spec),
        input_dtype="int32" if options.int32 else "int64", output_names=[t.name for t in config.outputs],
        dtype=recorded_dtype(options), format=variant.format, device=options.device, prompts=spec.prompts,
        default_prompt_name=spec.default_prompt_name, versions=library_versions(),
        parity=record_quality(report.to_dict(), quality),
        batching=options.batching, offsets_input=OFFSETS_INPUT if options.ragged else None,
        token_budget=options.token_budget if options.ragged else None,
        variant=variant.name, client=variant.client, modules=spec.chain.to_list(), dims=spec.dims,
        trust_remote_code=spec.trust_remote_code, task=spec.task,
    )


def _write_version(target: VersionTarget, force: bool, config_text: str, metadata: ExportMetadata, tokenizer,
                   variant: Variant, saved) -> str:
    """Assemble the version folder in staging and rename it into place; returns the model file's name."""
    with staged_version(target, force) as staging:
        version_dir = staging / str(target.version)
        filename = variant.save(saved, version_dir)
        tokenizer.save_pretrained(str(version_dir / TOKENIZER_DIR))
        metadata.write(version_dir)
        (staging / "config.pbtxt").write_text(config_text, encoding="utf-8")
    return filename
