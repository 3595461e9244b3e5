"""fp32, bf16 and int8 exports of one model served side by side by the bundled tritonserver on NVIDIA's LibTorch
backend: seq/s with 16 and 64 clients, one short text per request (padded to a length bucket so the dynamic batcher
merges them), the modes interleaved round by round. The exports are made here with `export_model` (each gated).

    PYTHONPATH=. python benchmarks/precision/served.py --model PATH --out benchmarks/precision/served_minilm.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from exporter.bench.machine import cpu_info
from exporter.checks.corpus import docstring_items
from exporter.export.pipeline import ExportOptions, export_model
from exporter.tokens import encode_batch, load_tokenizer
from exporter.triton.server import TritonServer
from exporter.triton_client import TritonClient

PRECISIONS = ("fp32", "bf16", "int8")
BUCKETS = (32, 64, 128, 256)


def served_rate(url: str, name: str, requests: list[dict], clients: int) -> float:
    local = threading.local()
    opened: list[TritonClient] = []

    def one(arrays):
        if not hasattr(local, "client"):
            local.client = TritonClient(url, "grpc")
            opened.append(local.client)
        return local.client.infer(name, arrays, ["embedding"])

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, requests[:clients]))  # connect and warm
        start = time.perf_counter()
        list(pool.map(one, requests))
        elapsed = time.perf_counter() - start
    for c in opened:
        c.close()
    return len(requests) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    cpu, flags = cpu_info()
    result = {"cpu": cpu, "cores": os.cpu_count(), "load_average_1m_start": os.getloadavg()[0], "rounds": {}}
    with tempfile.TemporaryDirectory(prefix="precision-served-") as scratch:
        repo = Path(scratch) / "repo"
        for p in PRECISIONS:
            export_model(args.model, ExportOptions(out=repo, name=f"m_{p}", precision=p, max_batch_size=64))
        tokenizer = load_tokenizer(repo / "m_fp32" / "1")
        meta = json.loads((repo / "m_fp32" / "1" / "tei_export.json").read_text())
        texts = [i.text for i in docstring_items(args.texts, seed=7)]
        requests = [encode_batch(tokenizer, [t], meta["max_seq_len"], meta["input_names"], np.int64, BUCKETS)
                    for t in texts]
        with TritonServer(repo, backend="nvidia", log_path=Path(scratch) / "triton.log") as server:
            result["served_by"] = server.served_by("m_int8")
            for clients in (16, 64):
                rates = {p: [] for p in PRECISIONS}
                for _ in range(args.rounds):
                    for p in PRECISIONS:
                        rates[p].append(served_rate(server.grpc_url, f"m_{p}", requests, clients))
                median = {p: statistics.median(v) for p, v in rates.items()}
                result["rounds"][f"{clients} clients"] = rates
                result[f"{clients} clients"] = {"seq_per_s": median,
                                                "ratio_to_fp32": {p: median[p] / median["fp32"] for p in PRECISIONS}}
                print(clients, result[f"{clients} clients"], flush=True)
    result["load_average_1m_end"] = os.getloadavg()[0]
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
