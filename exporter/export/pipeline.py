"""`tei-export trace` as a library call: model source -> checked TorchScript + config.pbtxt in a model repository."""
from __future__ import annotations

import copy
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..checks.parity import ParityReport
from ..errors import ParityError, UnsupportedModelError
from .batching import BATCHING_MODES, DEFAULT_TOKEN_BUDGET, OFFSETS_INPUT, OFFSETS_KIND, OFFSETS_TYPE, RAGGED_INPUT
from .metadata import TOKENIZER_DIR, ExportMetadata, library_versions
from .precision import (PrecisionOptions, apply_precision, check_target, fast_path_warning, quality_gate,
                        quality_header, record_quality, recorded_dtype, resolve_precision, validate_precision)
from .pt2 import PT2_FILENAME, PT2_PLATFORM, export_pt2, input_name, load_pt2, output_name
from .ragged import build_ragged, pack
from .reference import encoder_of, load_reference
from .repository import VersionTarget, default_model_name, plan_version, staged_version
from .spec import ModelSpec, SpecOverrides, read_spec, source_label
from .tracing import check_ragged, check_trace, make_inputs, ragged_cases, shape_cases, trace
from .triton_config import (TYPE_OF_DTYPE, BatchInput, DynamicBatching, InstanceGroup, TensorConfig, TritonModelConfig,
                            Warmup)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
FORMATS = ("torchscript", "pt2")
# The traced module inside a ragged export takes a padded chunk and its mask, built by the scripted outer module.
RAGGED_INNER_INPUTS = ("input_ids", "attention_mask")
EMBEDDING_OUTPUT = "embedding"
TOKEN_OUTPUT = "token_embeddings"

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
    revision: str | None = None
    trust_remote_code: bool = False
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
        if self.format == "pt2" and self.with_tokenizer:
            raise UnsupportedModelError(
                "--with-tokenizer needs a model that Triton batches across requests, and a torch_aoti model is "
                "served with max_batch_size 0 (its backend cannot split merged requests back yet)",
                fix="export the text pipeline with --format torchscript, or drop --with-tokenizer",
                where="--format pt2")
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
        if not self.ragged:
            if self.ragged_token_budget is not None:
                raise UnsupportedModelError("--ragged-token-budget sizes the chunks of a ragged model",
                                            fix="add --batching ragged, or drop --ragged-token-budget",
                                            where="--ragged-token-budget")
            return
        if self.format == "pt2":
            raise UnsupportedModelError(
                "ragged batching needs Triton to merge requests, and a torch_aoti model is served with "
                "max_batch_size 0 (its backend cannot split merged requests back yet)",
                fix="use --format torchscript with --batching ragged, or drop --batching ragged",
                where="--format pt2 --batching ragged")
        if self.token_embeddings:
            raise UnsupportedModelError(
                "per-token embeddings have no per-request shape in a ragged batch: the merged requests' tokens are "
                "one flat tensor, and Triton splits outputs back by request only on their first dimension",
                fix="export --token-embeddings with --batching padded (the default), or drop --token-embeddings",
                where="--token-embeddings --batching ragged")
        if self.buckets:
            raise UnsupportedModelError(
                "length buckets pad texts for the padded model; with --batching ragged each text is sent unpadded",
                fix="drop --buckets", where="--buckets --batching ragged")
        if self.token_budget < 1:
            raise UnsupportedModelError(f"the token budget {self.token_budget} must be at least 1",
                                        fix=f"pass --ragged-token-budget {DEFAULT_TOKEN_BUDGET} or another "
                                            "positive count of tokens (rows x padded length)",
                                        where="--ragged-token-budget")


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
            "pooling": self.spec.pooling,
            "normalize": self.spec.normalize,
            "max_seq_len": self.spec.max_seq_len,
            "inputs": [t.name for t in self.config.inputs],
            "outputs": [t.name for t in self.config.outputs],
            "parity": self.parity.to_dict(),
            "quality": self.metadata.parity.get("quality"),
            "warnings": list(self.warnings),
        }


def build_config(name: str, spec: ModelSpec, options: ExportOptions) -> TritonModelConfig:
    """The config.pbtxt content for an exported model.

    TorchScript: inputs named like forward()'s arguments, batch dimension left to Triton (max_batch_size > 0) and
    dynamic batching on. pt2: ``INPUT__<n>`` / ``OUTPUT__<n>`` and max_batch_size 0, the batch in ``dims``
    (see :mod:`exporter.export.pt2` for why). Ragged: ``input_ids`` alone, ragged, plus the ``offsets`` batch input
    (see :mod:`exporter.export.ragged`).
    """
    pt2 = options.format == "pt2"
    in_type = TYPE_OF_DTYPE["int32" if options.int32 else "int64"]
    out_type = TYPE_OF_DTYPE["float16" if options.dtype == "float16" else "float32"]
    batch_dim = (-1,) if pt2 else ()
    batch_inputs = ()
    if options.ragged:
        inputs = (TensorConfig(RAGGED_INPUT, in_type, (-1,), allow_ragged_batch=True),)
        batch_inputs = (BatchInput(OFFSETS_KIND, OFFSETS_INPUT, OFFSETS_TYPE, RAGGED_INPUT),)
    else:
        inputs = tuple(TensorConfig(input_name(i) if pt2 else n, in_type, batch_dim + (-1,))
                       for i, n in enumerate(spec.input_names))
    outputs = [TensorConfig(output_name(0) if pt2 else EMBEDDING_OUTPUT, out_type, batch_dim + (spec.hidden_size,))]
    if options.token_embeddings:
        outputs.append(TensorConfig(output_name(1) if pt2 else TOKEN_OUTPUT, out_type,
                                    batch_dim + (-1, spec.hidden_size)))
    cpus = os.cpu_count() or 1
    intra = options.intra_op_threads if options.intra_op_threads is not None else max(1, cpus // options.instances)
    # INTER_OP_THREAD_COUNT only when asked: NVIDIA's backend before 25.11 applies it per model, and torch allows
    # it once per process, so two models (or one reload) that set it abort the whole server.
    inter = (("INTER_OP_THREAD_COUNT", str(options.inter_op_threads)),) if options.inter_op_threads else ()
    parameters = (
        ("INTRA_OP_THREAD_COUNT", str(intra)),
        *inter,
        ("INFERENCE_MODE", "true" if options.inference_mode else "false"),
        ("DISABLE_OPTIMIZED_EXECUTION", "true" if options.disable_optimized_execution else "false"),
    )
    warmup_len = min(16, spec.max_seq_len)
    # Warm-up dims leave out the batch dimension only when Triton owns it (max_batch_size > 0). A ragged model
    # gets each warm-up request as one text of warmup_len zeros: ids [warmup_len], offsets [warmup_len].
    warmup_dims = (1, warmup_len) if pt2 else (warmup_len,)
    warmup = (Warmup("zeros_1x%d" % warmup_len, 1, tuple(TensorConfig(t.name, t.data_type, warmup_dims)
                                                         for t in inputs)),) if options.warmup else ()
    return TritonModelConfig(
        name=name,
        max_batch_size=0 if pt2 else options.max_batch_size,
        inputs=inputs,
        outputs=tuple(outputs),
        platform=PT2_PLATFORM if pt2 else "pytorch_libtorch",
        backend="pytorch" if pt2 else None,
        default_model_filename=PT2_FILENAME if pt2 else None,
        instance_group=(InstanceGroup(options.instances,
                                      "KIND_GPU" if options.instance_kind == "gpu" else "KIND_CPU"),),
        dynamic_batching=None if pt2 else DynamicBatching(options.max_queue_delay_us,
                                                          tuple(options.preferred_batch_sizes)),
        parameters=parameters,
        warmup=warmup,
        batch_inputs=batch_inputs,
    )


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


def _sentences_case(report: ParityReport, exported, reference, spec: ModelSpec, options: ExportOptions) -> None:
    """Text through the reference's own tokenizer and ``encode()`` vs the export on the same tokens: a padded batch,
    or for a ragged export each text unpadded, packed as the backend merges them."""
    texts = ["A man is eating food.", "The quick brown fox jumps over the lazy dog near the river bank today.",
             "Embeddings!"]
    features = reference.preprocess(texts)
    expected = reference.encode(texts, convert_to_tensor=True, normalize_embeddings=False).float().cpu()
    dtype = torch.int32 if options.int32 else torch.int64
    if options.ragged:
        ids, mask = features["input_ids"], features["attention_mask"].bool()
        args = pack([row[keep].tolist() for row, keep in zip(ids, mask)], dtype)
    else:
        args = tuple(features[n].to(dtype) for n in spec.input_names)
    with torch.inference_mode():
        out = exported(*(a.to(options.device) for a in args))
    report.add("encode() on sentences", expected, out[0] if isinstance(out, tuple) else out,
               seq_len=int(features["input_ids"].shape[1]))


def export_model(source: str, options: ExportOptions = ExportOptions(), progress: Progress | None = None
                 ) -> ExportResult:
    """Export ``source`` (hub id or folder) into ``options.out``; raises a TeiExportError subclass on bad input.

    Every check runs before anything is written; a failure leaves the repository as it was.
    """
    options.validate()
    options = resolve_precision(options)
    warnings = [w for w in (fast_path_warning(options.precision),) if w]
    if options.dtype == "bfloat16":
        warning = cpu_bf16_warning(options.device)
        if warning:
            warnings.append(warning)
            _say(progress, f"warning: {warning}")
    _say(progress, f"reading {source}")
    spec = read_spec(source, SpecOverrides(options.pooling, options.normalize, options.max_seq_len),
                     revision=options.revision, trust_remote_code=options.trust_remote_code)
    name = options.name or default_model_name(source)
    target = plan_version(Path(options.out), name, options.version, options.force)
    if options.with_tokenizer:
        from .text_models import plan_text_models

        plan_text_models(Path(options.out), name, options.version, options.force, ragged=options.ragged)
    config = build_config(name, spec, options)
    config_text = config.render(source=source_label(source))

    _say(progress, "loading weights (sentence-transformers reference)")
    reference = load_reference(spec, device=options.device)
    encoder, int8_plan = apply_precision(encoder_of(reference), spec, options, reference.tokenizer, progress)
    if options.dtype != "float32":
        encoder = copy.deepcopy(encoder).to(DTYPES[options.dtype])
    out_dtype = torch.float16 if options.dtype == "float16" else torch.float32
    wrapper = build_wrapper_for(spec, encoder, options, out_dtype).to(options.device)

    tokenizer = reference.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_dtype = torch.int32 if options.int32 else torch.int64
    cases = shape_cases(options.max_batch_size, spec.max_seq_len, spec.max_positions)
    example_case = next(c for c in cases if c.padding != "none")
    # A ragged export traces the padded chunk module; its scripted outer module casts the ids to int64 for it.
    traced_inputs = RAGGED_INNER_INPUTS if options.ragged else spec.input_names
    example = {k: v.to(options.device) for k, v in make_inputs(
        example_case, traced_inputs, spec.vocab_size, pad_id, torch.int64 if options.ragged else input_dtype).items()}
    checked, tolerance = check_target(options, reference, wrapper, traced_inputs)
    with tempfile.TemporaryDirectory(prefix="tei-export-pt2-") as scratch:
        if options.format == "pt2":
            # Compiled outside the repository: only a package that passed the checks is moved in.
            _say(progress, "torch.export + AOTInductor compile (model.pt2)")
            package = export_pt2(wrapper, example, spec.max_positions or spec.max_seq_len,
                                 Path(scratch) / PT2_FILENAME)
            exported = load_pt2(package, options.device)
        elif options.ragged:
            _say(progress, "tracing to TorchScript, scripting the ragged batch around it")
            exported = build_ragged(trace(wrapper, example), pad_id, spec.max_positions, options.token_budget,
                                    spec.hidden_size, out_dtype)
        else:
            _say(progress, "tracing to TorchScript")
            exported = trace(wrapper, example)

        if options.ragged:
            batches = ragged_cases(options.max_batch_size, spec.max_seq_len, options.token_budget,
                                   spec.max_positions)
            _say(progress, f"checking the ragged model against sentence-transformers on {len(batches) + 1} batches")
            report = check_ragged(exported, checked, batches, spec.input_names, spec.vocab_size, pad_id,
                                  input_dtype, tolerance, device=options.device)
        else:
            _say(progress, f"checking the {options.format} model against sentence-transformers at "
                           f"{len(cases) + 1} shapes")
            report = check_trace(exported, checked, cases, spec.input_names, spec.vocab_size, pad_id,
                                 input_dtype, tolerance, device=options.device)
        _sentences_case(report, exported, checked, spec, options)
        if not report.passed:
            raise ParityError(
                f"the {options.format} model differs from sentence-transformers; nothing was written\n"
                f"{report.table()}",
                report, fix="report this architecture; try --dtype float32 or another --max-seq-len",
            )
        quality = quality_gate(options, spec, reference, wrapper, traced_inputs, int8_plan, progress)
        config_text = quality_header(config_text, quality)
        metadata = ExportMetadata(
            source=source, source_path=str(spec.path), revision=spec.revision, model_type=spec.model_type,
            pooling=spec.pooling, normalize=spec.normalize, max_seq_len=spec.max_seq_len,
            hidden_size=spec.hidden_size, input_names=[t.name for t in config.inputs] if options.ragged
            else list(spec.input_names),
            input_dtype="int32" if options.int32 else "int64", output_names=[t.name for t in config.outputs],
            dtype=recorded_dtype(options), format=options.format, device=options.device, prompts=spec.prompts,
            default_prompt_name=spec.default_prompt_name, versions=library_versions(),
            parity=record_quality(report.to_dict(), quality),
            batching=options.batching, offsets_input=OFFSETS_INPUT if options.ragged else None,
            token_budget=options.token_budget if options.ragged else None,
        )
        _say(progress, f"writing {target.version_dir}")
        model_file = _write_version(target, options.force, config_text, metadata, tokenizer,
                                    package if options.format == "pt2" else exported)
    files = [target.model_dir / "config.pbtxt", target.version_dir / model_file,
             target.version_dir / "tei_export.json", target.version_dir / TOKENIZER_DIR]
    if options.with_tokenizer:
        from .text_models import text_model_names, write_text_models

        _say(progress, f"writing {' and '.join(text_model_names(name, options.ragged))} (text in, embeddings out)")
        files += write_text_models(Path(options.out), config, metadata, tokenizer, options.version, options.force,
                                   options.buckets, config.instance_group[0].kind)
    return ExportResult(target, spec, config, metadata, report, files, warnings)


def _write_version(target: VersionTarget, force: bool, config_text: str, metadata: ExportMetadata, tokenizer,
                   model: Path | torch.jit.ScriptModule) -> str:
    """Assemble the version folder in staging and rename it into place; returns the model file's name.

    ``model`` is a compiled pt2 package (moved in) or a TorchScript module (saved).
    """
    with staged_version(target, force) as staging:
        version_dir = staging / str(target.version)
        if isinstance(model, Path):
            filename = PT2_FILENAME
            shutil.move(str(model), str(version_dir / filename))
        else:
            filename = "model.pt"
            model.save(str(version_dir / filename))
        tokenizer.save_pretrained(str(version_dir / TOKENIZER_DIR))
        metadata.write(version_dir)
        (staging / "config.pbtxt").write_text(config_text, encoding="utf-8")
    return filename


def build_wrapper_for(spec: ModelSpec, encoder, options: ExportOptions, out_dtype: torch.dtype):
    """The module that is traced: the whole export, or for a ragged export the padded chunk inside it."""
    from .wrapper import build_wrapper

    return build_wrapper(encoder, spec.input_names, spec.pooling, spec.normalize,
                         token_embeddings=options.token_embeddings, output_dtype=out_dtype,
                         zero_token_types=options.ragged)
