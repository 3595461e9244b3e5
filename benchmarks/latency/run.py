"""One-request latency and 64-client throughput of a served export, with the server's OpenMP spin settings on
(tei-export's default, exporter/triton/openmp.py) and off (libgomp's defaults), beside the same model.pt in process
at batch 1, in one run. Rounds interleave the three so a machine that slows down mid-run slows all of them.

The repository is served whole, as a user serves it: a token model with its `_text` model is two LibTorch thread
teams in one server, the case where libgomp cuts its spin-wait. Every served answer is checked against the
in-process row of the same request (fp32 bound).

    PYTHONPATH=. python benchmarks/latency/run.py --repo REPO --model minilm --out benchmarks/latency/results.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from tritonclient.grpc import model_config_pb2

from exporter.bench.machine import cpu_info
from exporter.bench.options import BenchOptions
from exporter.bench.workloads import build_workloads
from exporter.export.reader import read_exported
from exporter.tensor_types import numpy_dtype
from exporter.tokens import RequestBuilder, request_buckets
from exporter.triton.server import TritonServer
from exporter.triton_client import TritonClient, send_requests

OMP_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "TEI_EXPORT_OMP_SPIN")


def in_process_ms(model_pt: Path, requests: list[dict], threads: int) -> tuple[float, list[np.ndarray]]:
    torch.set_num_threads(threads)
    module = torch.jit.load(str(model_pt))
    rows, times = [], []
    with torch.inference_mode():
        for request in requests[:20]:
            module(*[torch.from_numpy(a) for a in request.values()])
        for request in requests:
            start = time.perf_counter()
            out = module(*[torch.from_numpy(a) for a in request.values()])
            times.append(time.perf_counter() - start)
            rows.append(out.numpy())
    return statistics.median(times) * 1e3, rows


def served(repo: Path, model: str, spin: bool, requests: list[dict], many: list[dict], texts: list[str],
           expected: list[np.ndarray]) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in OMP_VARS}
    with TritonServer(repo, backend="nvidia", omp_spin=spin, env=env) as server:
        import tritonclient.grpc as grpcclient

        with TritonClient(server.grpc_url, "grpc") as client:
            if f"{model}_text" in server.models:  # the text model's team, alive as in real use
                text_in = client.model(f"{model}_text").inputs[0].name
                client.infer(f"{model}_text", {text_in: np.array([[t.encode()] for t in texts[:8]], dtype=object)},
                             ["embedding"])
            for request in requests[:20]:
                client.infer(model, request, ["embedding"])
            stats = grpcclient.InferenceServerClient(server.grpc_url)
            before = stats.get_inference_statistics(model).model_stats[0].inference_stats
            times = []
            for request, row in zip(requests, expected):
                start = time.perf_counter()
                got = client.infer(model, request, ["embedding"])["embedding"]
                times.append(time.perf_counter() - start)
                assert np.abs(got - row).max() <= 1e-5, "served row differs from the in-process row"
            after = stats.get_inference_statistics(model).model_stats[0].inference_stats
            stats.close()
        start = time.perf_counter()
        send_requests(lambda: TritonClient(server.grpc_url, "grpc"), model, many, "embedding", 64)
        c64 = len(many) / (time.perf_counter() - start)
        label = server.openmp.label
    n = len(requests)
    return {"openmp": label, "p50_ms": statistics.median(times) * 1e3,
            "compute_infer_ms": (after.compute_infer.ns - before.compute_infer.ns) / n / 1e6,
            "queue_ms": (after.queue.ns - before.queue.ns) / n / 1e6, "c64_seq_per_s": c64}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    threads = os.cpu_count() or 1
    export = read_exported(args.repo / args.model)
    texts = build_workloads(export.tokenizer(), export.metadata.max_seq_len,
                            BenchOptions(args.repo, args.model, workloads=("short",)))["short"]
    inputs = export.config.input
    build = RequestBuilder(export.tokenizer(), export.metadata.max_seq_len, tuple(i.name for i in inputs),
                           numpy_dtype(model_config_pb2.DataType.Name(inputs[0].data_type)),
                           request_buckets(export.variant, concurrent=False), tuple(export.metadata.input_names))
    requests = [build([texts[i % len(texts)]]) for i in range(args.requests)]
    many = [build([texts[i % len(texts)]]) for i in range(64 * 30)]
    rounds, load = [], [os.getloadavg()[0]]
    for r in range(args.rounds):
        ms, rows = in_process_ms(export.version_dir / "model.pt", requests, threads)
        entry = {"in_process_b1_p50_ms": ms}
        for spin in (False, True):
            entry["spin" if spin else "libgomp"] = served(args.repo, args.model, spin, requests, many, texts, rows)
        rounds.append(entry)
        print(f"round {r + 1}: in process {ms:.2f} ms; " + "; ".join(
            f"{k}: p50 {v['p50_ms']:.2f} ms (compute {v['compute_infer_ms']:.2f}), c64 {v['c64_seq_per_s']:.0f} seq/s"
            for k, v in entry.items() if isinstance(v, dict)), flush=True)
    load.append(os.getloadavg()[0])

    def med(key, field):
        return statistics.median(r[key][field] if field else r[key] for r in rounds)

    base = med("in_process_b1_p50_ms", None)
    summary = {k: {"p50_ms": med(k, "p50_ms"), "gap_ms": med(k, "p50_ms") - base,
                   "compute_infer_ms": med(k, "compute_infer_ms"), "c64_seq_per_s": med(k, "c64_seq_per_s")}
               for k in ("libgomp", "spin")}
    summary["c64_ratio_spin_to_libgomp"] = summary["spin"]["c64_seq_per_s"] / summary["libgomp"]["c64_seq_per_s"]
    result = {"cpu": cpu_info()[0], "cores": threads, "torch": torch.__version__, "model": args.model,
              "models_served": sorted(p.parent.name for p in args.repo.glob("*/config.pbtxt")),
              "load_average_start_end": load, "in_process_b1_p50_ms": base, "summary": summary, "rounds": rounds}
    print(json.dumps({k: result[k] for k in ("cpu", "cores", "models_served", "in_process_b1_p50_ms", "summary")},
                     indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
