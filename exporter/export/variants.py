"""An export variant as one object: what a client sends, how Triton batches it, the module, its checks, its file.

Chosen once from the options (:func:`variant_for`) and recorded in tei_export.json (``variant``), so everything
that reads an export later (verify, soak, tune, bench, the C++ check) asks the recorded variant instead of
re-deriving it from ``format`` and ``batching``.

* ``padded``: TorchScript; a request is a padded ``[batch, length]`` batch of the model's token inputs; Triton's
  dynamic batcher merges requests of equal length.
* ``ragged``: TorchScript; a request is one text ``[1, length]`` of ``input_ids``; Triton merges any lengths into
  one flat tensor plus each request's end offset (:mod:`.ragged`).
* ``pt2``: torch.export + AOTInductor (``model.pt2``, platform ``torch_aoti``); ``INPUT__<n>`` tensors with the
  batch in ``dims`` and max_batch_size 0 (:mod:`.pt2`).
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checks.parity import ParityReport, Tolerance
from ..errors import UnsupportedModelError
from .batching import (DEFAULT_TOKEN_BUDGET, OFFSETS_INPUT, OFFSETS_KIND, OFFSETS_TYPE, PADDED_TOKENS, RAGGED_INPUT,
                       RAGGED_TOKENS)
from .pt2 import PT2_FILENAME, PT2_PLATFORM, export_pt2, input_name, load_pt2, output_name
from .ragged import build_ragged, pack
from .spec import ModelSpec
from .tracing import check_ragged, check_trace, make_inputs, ragged_cases, shape_cases, trace
from ..tensor_types import TYPE_OF_DTYPE
from .triton_config import BatchInput, DynamicBatching, InstanceGroup, TensorConfig, TritonModelConfig, Warmup

EMBEDDING_OUTPUT = "embedding"
TOKEN_OUTPUT = "token_embeddings"
TORCHSCRIPT_FILENAME = "model.pt"
# The traced module inside a ragged export takes a padded chunk and its mask, built by the scripted outer module.
RAGGED_INNER_INPUTS = ("input_ids", "attention_mask")


@dataclass(frozen=True)
class BuildContext:
    """What every variant builds from: the spec, the traceable wrapper, the reference and the tokens' facts."""

    spec: ModelSpec
    wrapper: torch.nn.Module
    reference: object  # reference.Reference
    pad_id: int
    input_dtype: torch.dtype
    output_dtype: torch.dtype
    tolerance: Tolerance
    device: str
    max_batch_size: int
    token_budget: int


class Variant:
    name: str = ""
    client: str = PADDED_TOKENS
    format: str = "torchscript"
    filename: str = TORCHSCRIPT_FILENAME
    building: str = "tracing to TorchScript"  # what trace says while build() runs
    # The ids the traced module takes: the export's input type, or int64 where an outer module casts for it.
    int64_traced: bool = False

    def validate(self, options, arch) -> None:
        """Refuse the options this variant cannot serve, naming the option and the fix."""

    def traced_inputs(self, spec: ModelSpec) -> tuple[str, ...]:
        return spec.input_names

    def client_inputs(self, spec: ModelSpec) -> list[str]:
        """What a client sends, in order (tei_export.json ``input_names``)."""
        return list(spec.input_names)

    def config(self, name: str, spec: ModelSpec, options) -> TritonModelConfig:
        raise NotImplementedError

    def build(self, ctx: BuildContext, example: dict[str, torch.Tensor], scratch: Path):
        """The exported module (callable like the served model) and what is saved: a ScriptModule or a package."""
        raise NotImplementedError

    def check(self, ctx: BuildContext, module) -> ParityReport:
        cases = shape_cases(ctx.max_batch_size, ctx.spec.max_seq_len, ctx.spec.max_positions)
        return check_trace(module, ctx.reference, cases, ctx.spec.input_names, ctx.spec.vocab_size, ctx.pad_id,
                           ctx.input_dtype, ctx.tolerance, device=ctx.device)

    def check_count(self, ctx: BuildContext) -> int:
        return len(shape_cases(ctx.max_batch_size, ctx.spec.max_seq_len, ctx.spec.max_positions)) + 1

    def sentence_args(self, features: dict[str, torch.Tensor], spec: ModelSpec, dtype: torch.dtype) -> tuple:
        """Tokenizer output for a few texts as this variant's module takes it (token types are zeros for one text, and
        some tokenizers do not return them)."""
        zeros = torch.zeros_like(features["input_ids"])
        return tuple(features.get(n, zeros).to(dtype) for n in spec.input_names)

    def save(self, saved, version_dir: Path) -> str:
        saved.save(str(version_dir / self.filename))
        return self.filename

    def example(self, spec: ModelSpec, options, pad_id: int) -> dict[str, torch.Tensor]:
        """The tracing example: a padded batch (real padding, so attention is traced with its mask)."""
        cases = shape_cases(options.max_batch_size, spec.max_seq_len, spec.max_positions)
        case = next(c for c in cases if c.padding != "none")
        dtype = torch.int64 if self.int64_traced or not options.int32 else torch.int32
        return {k: v.to(options.device)
                for k, v in make_inputs(case, self.traced_inputs(spec), spec.vocab_size, pad_id, dtype).items()}


def _parameters(options) -> tuple[tuple[str, str], ...]:
    cpus = os.cpu_count() or 1
    intra = options.intra_op_threads if options.intra_op_threads is not None else max(1, cpus // options.instances)
    # INTER_OP_THREAD_COUNT only when asked: NVIDIA's backend before 25.11 applies it per model, and torch allows
    # it once per process, so two models (or one reload) that set it abort the whole server.
    inter = (("INTER_OP_THREAD_COUNT", str(options.inter_op_threads)),) if options.inter_op_threads else ()
    return (
        ("INTRA_OP_THREAD_COUNT", str(intra)),
        *inter,
        ("INFERENCE_MODE", "true" if options.inference_mode else "false"),
        ("DISABLE_OPTIMIZED_EXECUTION", "true" if options.disable_optimized_execution else "false"),
    )


def _types(options) -> tuple[str, str]:
    return (TYPE_OF_DTYPE["int32" if options.int32 else "int64"],
            TYPE_OF_DTYPE["float16" if options.dtype == "float16" else "float32"])


def _triton_config(name: str, options, inputs, outputs, warmup_dims, *, pt2: bool = False,
                   batch_inputs=()) -> TritonModelConfig:
    warmup = (Warmup("zeros_1x%d" % warmup_dims[-1], 1, tuple(TensorConfig(t.name, t.data_type, warmup_dims)
                                                               for t in inputs)),) if options.warmup else ()
    return TritonModelConfig(
        name=name,
        max_batch_size=0 if pt2 else options.max_batch_size,
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        platform=PT2_PLATFORM if pt2 else "pytorch_libtorch",
        backend="pytorch" if pt2 else None,
        default_model_filename=PT2_FILENAME if pt2 else None,
        instance_group=(InstanceGroup(options.instances,
                                      "KIND_GPU" if options.instance_kind == "gpu" else "KIND_CPU"),),
        dynamic_batching=None if pt2 else DynamicBatching(options.max_queue_delay_us,
                                                          tuple(options.preferred_batch_sizes)),
        parameters=_parameters(options),
        warmup=warmup,
        batch_inputs=tuple(batch_inputs),
    )


def _warmup_len(spec: ModelSpec) -> int:
    return min(16, spec.max_seq_len)


class Padded(Variant):
    name = "padded"

    def config(self, name: str, spec: ModelSpec, options) -> TritonModelConfig:
        in_type, out_type = _types(options)
        inputs = [TensorConfig(n, in_type, (-1,)) for n in spec.input_names]
        outputs = [TensorConfig(EMBEDDING_OUTPUT, out_type, (spec.embedding_width,))]
        if options.token_embeddings:
            outputs.append(TensorConfig(TOKEN_OUTPUT, out_type, (-1, spec.hidden_size)))
        # Warm-up dims leave out the batch dimension: Triton owns it (max_batch_size > 0).
        return _triton_config(name, options, inputs, outputs, (_warmup_len(spec),))

    def build(self, ctx: BuildContext, example, scratch: Path):
        traced = trace(ctx.wrapper, example)
        return traced, traced


class Ragged(Variant):
    name = "ragged"
    client = RAGGED_TOKENS
    building = "tracing to TorchScript, scripting the ragged batch around it"
    int64_traced = True  # the scripted outer module casts the ids for the traced chunk module

    def validate(self, options, arch) -> None:
        if not arch.ragged:
            raise UnsupportedModelError(f"the {arch.model_type} family cannot be exported with ragged batching",
                                        fix="drop --batching ragged", where="--batching ragged")
        if options.token_embeddings:
            raise UnsupportedModelError(
                "per-token embeddings have no per-request shape in a ragged batch: the merged requests' tokens are "
                "one flat tensor, and Triton splits outputs back by request only on their first dimension",
                fix="export --token-embeddings with --batching padded (the default), or drop --token-embeddings",
                where="--token-embeddings --batching ragged")
        if options.buckets:
            raise UnsupportedModelError(
                "length buckets pad texts for the padded model; with --batching ragged each text is sent unpadded",
                fix="drop --buckets", where="--buckets --batching ragged")
        if options.token_budget < 1:
            raise UnsupportedModelError(f"the token budget {options.token_budget} must be at least 1",
                                        fix=f"pass --ragged-token-budget {DEFAULT_TOKEN_BUDGET} or another "
                                            "positive count of tokens (rows x padded length)",
                                        where="--ragged-token-budget")

    def traced_inputs(self, spec: ModelSpec) -> tuple[str, ...]:
        return RAGGED_INNER_INPUTS

    def client_inputs(self, spec: ModelSpec) -> list[str]:
        return [RAGGED_INPUT]

    def config(self, name: str, spec: ModelSpec, options) -> TritonModelConfig:
        in_type, out_type = _types(options)
        inputs = [TensorConfig(RAGGED_INPUT, in_type, (-1,), allow_ragged_batch=True)]
        outputs = [TensorConfig(EMBEDDING_OUTPUT, out_type, (spec.embedding_width,))]
        # Each warm-up request is one text of zeros: ids [length]; Triton computes the offsets batch input.
        return _triton_config(name, options, inputs, outputs, (_warmup_len(spec),),
                              batch_inputs=(BatchInput(OFFSETS_KIND, OFFSETS_INPUT, OFFSETS_TYPE, RAGGED_INPUT),))

    def build(self, ctx: BuildContext, example, scratch: Path):
        module = build_ragged(trace(ctx.wrapper, example), ctx.pad_id, ctx.spec.max_positions, ctx.token_budget,
                              ctx.spec.embedding_width, ctx.output_dtype)
        return module, module

    def _cases(self, ctx: BuildContext):
        return ragged_cases(ctx.max_batch_size, ctx.spec.max_seq_len, ctx.token_budget, ctx.spec.max_positions)

    def check(self, ctx: BuildContext, module) -> ParityReport:
        return check_ragged(module, ctx.reference, self._cases(ctx), ctx.spec.input_names, ctx.spec.vocab_size,
                            ctx.pad_id, ctx.input_dtype, ctx.tolerance, device=ctx.device)

    def check_count(self, ctx: BuildContext) -> int:
        return len(self._cases(ctx)) + 1

    def sentence_args(self, features, spec, dtype) -> tuple:
        ids, mask = features["input_ids"], features["attention_mask"].bool()
        return pack([row[keep].tolist() for row, keep in zip(ids, mask)], dtype)


class Pt2(Variant):
    name = "pt2"
    format = "pt2"
    filename = PT2_FILENAME
    building = "torch.export + AOTInductor compile (model.pt2)"

    def validate(self, options, arch) -> None:
        if not arch.pt2:
            raise UnsupportedModelError(f"torch.export cannot export the {arch.model_type} family: "
                                        f"{arch.pt2_why_not}", fix="use --format torchscript", where="--format pt2")
        if options.with_tokenizer:
            raise UnsupportedModelError(
                "--with-tokenizer needs a model that Triton batches across requests, and a torch_aoti model is "
                "served with max_batch_size 0 (its backend cannot split merged requests back yet)",
                fix="export the text pipeline with --format torchscript, or drop --with-tokenizer",
                where="--format pt2")

    def client_inputs(self, spec: ModelSpec) -> list[str]:
        return list(spec.input_names)

    def config(self, name: str, spec: ModelSpec, options) -> TritonModelConfig:
        in_type, out_type = _types(options)
        inputs = [TensorConfig(input_name(i), in_type, (-1, -1)) for i in range(len(spec.input_names))]
        outputs = [TensorConfig(output_name(0), out_type, (-1, spec.embedding_width))]
        if options.token_embeddings:
            outputs.append(TensorConfig(output_name(1), out_type, (-1, -1, spec.hidden_size)))
        # max_batch_size 0: the batch is part of each request's own shape, warm-up included.
        return _triton_config(name, options, inputs, outputs, (1, _warmup_len(spec)), pt2=True)

    def build(self, ctx: BuildContext, example, scratch: Path):
        # Compiled outside the repository: only a package that passed the checks is moved in.
        package = export_pt2(ctx.wrapper, example, ctx.spec.max_positions or ctx.spec.max_seq_len,
                             scratch / PT2_FILENAME)
        return load_pt2(package, ctx.device), package

    def save(self, saved, version_dir: Path) -> str:
        shutil.move(str(saved), str(version_dir / self.filename))
        return self.filename


VARIANTS = {v.name: v for v in (Padded(), Ragged(), Pt2())}


def variant_for(options) -> Variant:
    """The variant ``--format`` and ``--batching`` choose; combinations no variant serves are refused here."""
    if options.format == "pt2":
        if options.ragged:
            raise UnsupportedModelError(
                "ragged batching needs Triton to merge requests, and a torch_aoti model is served with "
                "max_batch_size 0 (its backend cannot split merged requests back yet)",
                fix="use --format torchscript with --batching ragged, or drop --batching ragged",
                where="--format pt2 --batching ragged")
        return VARIANTS["pt2"]
    return VARIANTS["ragged" if options.ragged else "padded"]
