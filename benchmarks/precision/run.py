"""fp32, bf16, int8 (trace --precision int8's recipe) and naive quantize_dynamic side by side, in one run.

Quality against the fp32 trace on the gate's corpus (the verify corpus: 1,000 docstring sentences + edge cases):
min/mean cosine and mean top-10 neighbour overlap, measured with exporter.checks.quality as the gate measures them.
Speed: in-process TorchScript seq/s at batch 1 and 16 on short docstring sentences, the modes interleaved round by
round (the machine is shared: a ratio within one round is what holds), the median of the rounds reported.
Size: the saved model.pt. The GEMM rates of the three precisions on this CPU come first: they say which lever pays.

    PYTHONPATH=. python benchmarks/precision/run.py --model minilm=PATH [--model mpnet=PATH] \
        --out benchmarks/precision/results.json
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from exporter.bench.machine import cpu_info
from exporter.checks.quality import (MIN_TEXTS, default_bounds, embed, gate_corpus, measure, row_independence,
                                     token_batches)
from exporter.export.pipeline import ExportOptions
from exporter.export.precision import apply_precision
from exporter.export.reference import load_reference
from exporter.export.spec import SpecOverrides, read_spec
from exporter.export.tracing import trace
from exporter.export.wrapper import wrapper_for

MODES = ("fp32", "bf16", "int8", "quantize_dynamic")


def gemm_rates(threads: int, m: int = 2048, k: int = 768, n: int = 3072) -> dict:
    """[m x k] x [k x n] in fp32, bf16 and int8 (aten::_int_mm, weight stored [n, k] as int8 Linear keeps it)."""
    torch.set_num_threads(threads)
    a, w = torch.randn(m, k), torch.randn(n, k)
    qa = torch.randint(-127, 127, (m, k), dtype=torch.int8)
    qw = torch.randint(-127, 127, (n, k), dtype=torch.int8)
    ab, wb = a.bfloat16(), w.bfloat16()
    calls = {"fp32": lambda: a @ w.t(), "bf16": lambda: ab @ wb.t(), "int8": lambda: torch._int_mm(qa, qw.t())}
    best = {name: float("inf") for name in calls}
    for _ in range(5):  # interleaved; the best of five per precision
        for name, call in calls.items():
            call()
            start = time.perf_counter()
            call()
            best[name] = min(best[name], time.perf_counter() - start)
    rates = {name: 2.0 * m * k * n / t / 1e9 for name, t in best.items()}
    return {"shape": [m, k, n], "gop_per_s": rates,
            "ratio_to_fp32": {name: rates[name] / rates["fp32"] for name in rates}}


def modules(spec, reference):
    """The four wrappers: fp32, bf16 (trace --dtype bfloat16's recipe), int8 (trace --precision int8's) and
    quantize_dynamic on every Linear (infinity-emb's --dtype int8)."""
    encoder = reference.encoder
    wrap = lambda e: wrapper_for(spec, reference, e)  # noqa: E731
    int8, plan = apply_precision(encoder, spec, ExportOptions(precision="int8"), reference.tokenizer)
    naive = torch.ao.quantization.quantize_dynamic(copy.deepcopy(encoder), {torch.nn.Linear}, dtype=torch.qint8)
    return {"fp32": wrap(encoder), "bf16": wrap(copy.deepcopy(encoder).to(torch.bfloat16)), "int8": wrap(int8),
            "quantize_dynamic": wrap(naive)}, plan


def rate(module, batches, input_names, seconds: float) -> float:
    """seq/s over ``batches`` (repeated until ``seconds`` passed, at least once)."""
    rows, start = 0, time.perf_counter()
    with torch.inference_mode():
        while True:
            for b in batches:
                module(*(b[n] for n in input_names))
                rows += len(b["input_ids"])
            if time.perf_counter() - start >= seconds:
                return rows / (time.perf_counter() - start)


def bench_model(label: str, path: str, threads: int, rounds: int, seconds: float, scratch: Path,
                corpus_size: int, speed_only: bool = False) -> dict:
    torch.set_num_threads(threads)
    load_before = os.getloadavg()
    spec = read_spec(path, SpecOverrides())
    reference = load_reference(spec)
    tokenizer = reference.tokenizer
    wrappers, plan = modules(spec, reference)
    items, corpus = gate_corpus(tokenizer, spec.max_seq_len)
    if corpus_size < MIN_TEXTS:  # a smaller sample for a large model on a busy machine: said in the results
        items = items[:corpus_size] + items[MIN_TEXTS:]  # the first docstrings, every edge case
        corpus = f"{corpus_size} docstring sentences + {len(items) - corpus_size} edge cases of the {corpus}"
    texts = [i.text for i in items]
    batches, order = token_batches(tokenizer, texts, spec.input_names, spec.max_seq_len)
    example = batches[len(batches) // 2]
    traced, sizes = {}, {}
    for mode, wrapper in wrappers.items():
        traced[mode] = trace(wrapper, example)
        file = scratch / f"{label}_{mode}.pt"
        traced[mode].save(str(file))
        sizes[mode] = file.stat().st_size
    rows = {} if speed_only else {mode: embed(m, batches, order, spec.input_names) for mode, m in traced.items()}
    quality = {}
    for mode in [] if speed_only else MODES[1:]:
        precision = "bf16" if mode == "bf16" else "int8"
        independence = row_independence(traced[mode], tokenizer, texts[:8], spec.input_names, spec.max_seq_len)
        report = measure(precision, default_bounds(precision), items, rows["fp32"], rows[mode], independence, corpus)
        quality[mode] = {"min_cosine": report.min_cosine, "mean_cosine": report.mean_cosine,
                         "mean_top10_overlap": report.mean_overlap, "passes_default_gate": report.passed,
                         "default_gate": report.bounds.describe(),
                         "row_alone_vs_in_batch_max_abs_diff": report.row_independence,
                         "padding_max_abs_diff": report.padding_sensitivity, "worst_texts": report.worst[:3]}
    short = [t for t in texts if 5 <= len(tokenizer(t)["input_ids"]) <= 24][:64]
    speed = {}
    for batch in (1, 16):
        work, _ = token_batches(tokenizer, short[:16] if batch == 1 else short, spec.input_names, spec.max_seq_len,
                                batch=batch)
        per_round = {mode: [] for mode in MODES}
        for _ in range(rounds):
            for mode in MODES:
                rate(traced[mode], work[:1], spec.input_names, 0.0)  # warm
                per_round[mode].append(rate(traced[mode], work, spec.input_names, seconds))
        median = {mode: statistics.median(v) for mode, v in per_round.items()}
        speed[f"batch {batch}"] = {
            "seq_per_s": median,
            "ratio_to_fp32": {mode: median[mode] / median["fp32"] for mode in MODES},
            "rounds": per_round}
    return {"model": label, "source": Path(path).name, "texts": len(texts), "corpus": corpus,
            "short_texts": len(short), "int8": plan.to_dict(), "quality_vs_fp32": quality, "speed": speed,
            "load_average_1m_before_after": [load_before[0], os.getloadavg()[0]], "model_pt_bytes": sizes,
            "size_ratio_to_fp32": {m: sizes[m] / sizes["fp32"] for m in MODES}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="label=folder (repeatable)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--speed-only", action="store_true", help="skip the quality figures (a quick speed run)")
    parser.add_argument("--corpus-size", type=int, default=10 ** 6, help="quality on at most this many texts")
    args = parser.parse_args()
    cpu, flags = cpu_info()
    result = {"cpu": cpu, "cores": os.cpu_count(), "threads": args.threads, "torch": torch.__version__,
              "matrix_flags": sorted(flags & {"amx_int8", "amx_bf16", "avx512_vnni", "avx_vnni", "avx512_bf16",
                                              "avx512f", "avx2"}),
              "gemm": gemm_rates(args.threads), "models": []}
    print(json.dumps({k: result[k] for k in ("cpu", "matrix_flags", "gemm")}, indent=1), flush=True)
    with tempfile.TemporaryDirectory(prefix="precision-bench-") as scratch:
        for spec in args.model:
            label, _, path = spec.partition("=")
            started = time.monotonic()
            result["models"].append(bench_model(label, path, args.threads, args.rounds, args.seconds, Path(scratch),
                                              args.corpus_size, args.speed_only))
            result["models"][-1]["seconds"] = time.monotonic() - started
            print(json.dumps(result["models"][-1], indent=1, default=str)[:3000], flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
