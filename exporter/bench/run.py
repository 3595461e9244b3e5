"""`tei-export bench` as one library call: every mode on the same texts and threads, side by side."""
from __future__ import annotations

import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..checks.corpus import count_tokens
from ..checks.parity import tolerance_for
from ..errors import TeiExportError, first_line
from .in_process import bf16_module, pt2_module
from .infinity import measure_infinity
from .machine import FlopModel, machine_info
from .measure import measure_encode, measure_in_process
from .modes import COMPAT_SUFFIX, EAGER, ORT_FP32, PT2_FP32, SERVER_MODES, ST_ENCODE, TS_BF16, TS_FP32
from .options import BenchOptions
from .report import BenchReport, Cell, ModeInfo, Progress, cell_line, fill_ratios, say, targets_of
from .served import serve_and_measure, served_backends
from .workloads import build_workloads, token_batches


def run_bench(options: BenchOptions, progress: Progress | None = None) -> BenchReport:
    """Measure every mode for ``options.model`` of ``options.repository``; see the module docstring."""
    from ..export.reader import exported_models
    from ..export.reference import load_reference
    from ..export.tracing import make_inputs, shape_cases
    from ..export.wrapper import wrapper_for

    options.validate()
    repo = Path(options.repository)
    target = exported_models(repo, [options.model])[0]
    meta = target.metadata
    if meta.variant == "ragged":
        raise TeiExportError(f"{options.model} is a ragged export; bench measures a padded export and serves the "
                             "ragged export of the same source beside it",
                             fix="pass --model with the name of the padded (default) export of the same model",
                             where=str(target.model_dir))
    if meta.dtype != "float32" or meta.variant != "padded":
        raise TeiExportError(f"bench compares against a float32 TorchScript export, and {options.model} is "
                             f"{meta.dtype} {meta.format}",
                             fix="pass --model with the name of a float32 TorchScript export (a pt2 or bf16 export of "
                                 "the same source in the repository is measured beside it)",
                             where=str(target.model_dir))
    torch.set_num_threads(options.threads)
    say(progress, f"measuring the machine's fp32 matmul limit on {options.threads} threads")
    machine = machine_info(options.threads, options.quick)
    peak = machine["matmul_gflop_per_s"]["fp32"]

    say(progress, f"loading {options.model}: eager sentence-transformers, TorchScript, tokenizer")
    spec = target.spec()
    reference = load_reference(spec)
    flop = FlopModel.of(reference.encoder)
    tokenizer = target.tokenizer()
    names = tuple(meta.input_names)
    workloads = build_workloads(tokenizer, meta.max_seq_len, options)
    expected = {w: reference.encode(t).astype(np.float64) for w, t in workloads.items()}
    report = BenchReport(
        options={k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()},
        machine=machine,
        model={"name": options.model, "source": meta.source, "max_seq_len": meta.max_seq_len,
               "pooling": meta.pooling, "normalize": meta.normalize, "matmul_params": flop.matmul_params,
               "layers": flop.layers, "hidden": flop.hidden},
        workloads={w: {"texts": len(t), "mean_tokens": float(np.mean([min(count_tokens(tokenizer, x), meta.max_seq_len)
                                                                        for x in t]))}
                   for w, t in workloads.items()},
    )

    # -- in-process modes ---------------------------------------------------------------------------------------
    fns: dict[str, Callable] = {}
    report.modes.append(ModeInfo(EAGER, "measured", "SentenceTransformer forward on the same token tensors"))
    fns[EAGER] = lambda *t: reference.embed(dict(zip(names, t)))
    fns[TS_FP32] = torch.jit.load(str(target.version_dir / "model.pt"))
    report.modes.append(ModeInfo(TS_FP32, "measured", f"{target.version_dir / 'model.pt'}"))
    cases = shape_cases(16, meta.max_seq_len)
    example = make_inputs(next(c for c in cases if c.padding != "none"), names, spec.vocab_size,
                          tokenizer.pad_token_id or 0, torch.int64)
    if options.bf16:
        try:
            fns[TS_BF16], detail = bf16_module(repo, meta, reference, spec, example)
            report.modes.append(ModeInfo(TS_BF16, "measured", detail))
        except Exception as err:
            report.modes.append(ModeInfo(TS_BF16, f"error: {type(err).__name__}: {err}"))
    else:
        report.modes.append(ModeInfo(TS_BF16, "not measured: --no-bf16"))
    # the fp32 wrapper that trace exports: the ONNX export and a pt2 compiled here start from it
    wrapper = wrapper_for(spec, reference)
    scratch = tempfile.TemporaryDirectory(prefix="tei-export-bench-")
    if options.pt2:
        try:
            say(progress, "loading or compiling the AOTInductor model.pt2")
            fns[PT2_FP32], detail = pt2_module(repo, meta, wrapper, spec, example, Path(scratch.name))
            report.modes.append(ModeInfo(PT2_FP32, "measured", detail))
        except Exception as err:
            report.modes.append(ModeInfo(PT2_FP32, f"error: {type(err).__name__}: {str(err)[:200]}"))
    else:
        report.modes.append(ModeInfo(PT2_FP32, "not measured: --no-pt2"))
    if options.onnx:
        try:
            from ..export.onnx_export import OnnxRuntimeModel, export_onnx

            say(progress, "exporting the same wrapper to ONNX")
            path = export_onnx(wrapper, example, Path(scratch.name) / "model.onnx")
            fns[ORT_FP32] = OnnxRuntimeModel(path, options.threads)
            report.modes.append(ModeInfo(ORT_FP32, "measured", "torch.onnx.export of the traced wrapper, "
                                         "onnx.checker ok, CPUExecutionProvider"))
        except Exception as err:
            report.modes.append(ModeInfo(ORT_FP32, f"error: {type(err).__name__}: {str(err)[:200]}"))
    else:
        report.modes.append(ModeInfo(ORT_FP32, "not measured: --no-onnx"))

    # a workload smaller than a batch runs as one batch, measured once; + 1: encode() below
    sizes = {w: sorted({min(b, len(t)) for b in options.batches}) for w, t in workloads.items()}
    total_in = (len(fns) + 1) * sum(len(v) for v in sizes.values())
    k = 0
    for workload, texts in workloads.items():
        for eff in sizes[workload]:
            chunks = token_batches(tokenizer, texts, eff, meta.max_seq_len, names)
            for mode, fn in fns.items():
                k += 1
                tol = tolerance_for("bfloat16" if mode == TS_BF16 else "float32")
                cell = Cell(mode, workload, eff, 1)
                try:
                    measure_in_process(fn, chunks, expected[workload], tol, flop, peak, options, cell)
                except Exception as err:
                    cell.error = f"{type(err).__name__}: {first_line(err, 200)}"
                report.cells.append(cell)
                say(progress, cell_line(k, total_in, cell))
    scratch.cleanup()
    report.modes.append(ModeInfo(ST_ENCODE, "measured", "SentenceTransformer.encode(texts, batch_size=batch) on the "
                                 "whole workload per call: it sorts the texts by length and batches them"))
    for workload, texts in workloads.items():
        lengths = [min(count_tokens(tokenizer, t), meta.max_seq_len) for t in texts]
        for batch in sizes[workload]:
            k += 1
            cell = Cell(ST_ENCODE, workload, batch, 1)
            try:
                measure_encode(reference, texts, lengths, batch, expected[workload], tolerance_for("float32"), flop,
                               peak, options, cell)
            except Exception as err:
                cell.error = f"{type(err).__name__}: {first_line(err, 200)}"
            report.cells.append(cell)
            say(progress, cell_line(k, total_in, cell))

    # -- served modes -------------------------------------------------------------------------------------------
    if options.server:
        backends = served_backends(options)
        for backend in backends:
            suffix = COMPAT_SUFFIX if backend == "compat" and len(backends) > 1 else ""
            serve_and_measure(report, options, repo, target, tokenizer, workloads, expected, flop, peak, progress,
                               backend, suffix)
    else:
        for mode in SERVER_MODES:
            report.modes.append(ModeInfo(mode, "not measured: --no-server"))
    measure_infinity(report, options, target, tokenizer, workloads, expected, flop, peak, progress)

    for m in report.modes:
        cells = [c for c in report.cells if c.mode == m.mode and c.error is None]
        if cells:
            m.parity_passed = all(c.parity is not None and c.parity.passed for c in cells)
        errors = [c for c in report.cells if c.mode == m.mode and c.error]
        if errors and m.status == "measured":
            m.detail = (m.detail + "; " if m.detail else "") + f"{len(errors)} cell(s) failed: {errors[0].error}"
    fill_ratios(report)
    report.targets = targets_of(report)
    return report
