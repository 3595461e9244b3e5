"""Our own load generator for served cells: threads, one client each, bounded by requests and time."""
from __future__ import annotations

import itertools
import threading
import time

import numpy as np

from ..errors import first_line
from .measure import parity_of, percentiles
from .options import BenchOptions, pass_end
from .report import Cell


def client_for(url, protocol):
    """A client with ``infer(model, request, [output])``, ``statistics(model)`` and ``close()``: Triton's (grpc,
    http) or infinity-emb's (:data:`OPENAI`)."""
    from .infinity_client import OPENAI, InfinityClient

    if protocol == OPENAI:
        return InfinityClient(url)
    from ..triton_client import TritonClient

    return TritonClient(url, protocol)


def send_all(url, protocol, model, requests, output, concurrency) -> np.ndarray:
    """Every request once, rows in request order (one row per one-text request)."""
    from ..triton_client import send_requests

    rows = send_requests(lambda: client_for(url, protocol), model, requests, output, concurrency)
    return np.concatenate([np.asarray(r, dtype=np.float32).reshape(1, -1) for r in rows], axis=0)


def timed_load(url, protocol, model, requests, costs, output, concurrency, options: BenchOptions):
    """Timed load: ``concurrency`` threads send requests round-robin until max_calls are sent or time is up, in
    whole passes over ``requests`` (:func:`pass_end`): the pass under way when time is up is finished."""
    limit = options.call_limit(len(requests))
    workers = max(1, min(concurrency, limit))
    clients = [client_for(url, protocol) for _ in range(workers)]
    counter, latencies, done, errors = itertools.count(), [], [], []
    gate = threading.Barrier(workers + 1)
    lock = threading.Lock()
    state = {"stop_at": limit}

    def worker(client):
        gate.wait()
        while not errors:
            k = next(counter)
            if time.perf_counter() - state["start"] >= options.max_seconds:
                with lock:  # the first worker to see the time up fixes where the pass ends, for every worker
                    state["stop_at"] = min(state["stop_at"], max(pass_end(k, len(requests)), len(requests)))
            if k >= state["stop_at"]:
                return
            req = requests[k % len(requests)]
            t0 = time.perf_counter()
            try:
                client.infer(model, req, [output])
            except Exception as err:  # reported in the cell, not raised from a thread
                errors.append(f"{type(err).__name__}: {first_line(err, 200)}")
                return
            latencies.append(time.perf_counter() - t0)
            done.append(k % len(requests))

    threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in clients]
    for t in threads:
        t.start()
    state["start"] = time.perf_counter()
    gate.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - state["start"]
    for c in clients:
        c.close()
    return latencies, done, elapsed, errors


def served_cell(cell: Cell, url, protocol, model, requests, costs, output, expected, tolerance, flop, peak,
                 options: BenchOptions) -> Cell:
    try:
        got = send_all(url, protocol, model, requests, output, cell.concurrency)
        cell.parity = parity_of(expected, got, tolerance)
        with client_for(url, protocol) as admin:
            before = admin.statistics(model)
            cpu_before = time.process_time()
            latencies, done, elapsed, errors = timed_load(url, protocol, model, requests, costs, output,
                                                     cell.concurrency, options)
            cell.client_cpu_cores = (time.process_time() - cpu_before) / elapsed
            after = admin.statistics(model, at_least=before[0] + len(done)) if before else None  # one row each
        executions = after[1] - before[1] if before and after else 0  # infinity-emb reports no batch counts
        cell.server_avg_batch = (after[0] - before[0]) / executions if executions > 0 else None
    except Exception as err:
        cell.error = f"{type(err).__name__}: {first_line(err, 200)}"
        return cell
    if errors:
        cell.error = errors[0]
        return cell
    cell.calls = cell.seqs = len(done)
    cell.seconds = elapsed
    cell.seq_per_s = len(done) / elapsed
    cell.tokens_per_s = sum(costs[i][0] for i in done) / elapsed
    cell.p50_ms, cell.p95_ms, cell.p99_ms = percentiles(latencies)
    cell.model_gflop_per_s = sum(flop.flops(1, costs[i][1]) for i in done) / elapsed / 1e9
    cell.fraction_of_matmul_peak = cell.model_gflop_per_s / peak if peak else 0.0
    return cell


def text_request(served, text: str) -> dict[str, np.ndarray]:
    first = served.inputs[0]
    shape = ((1,) if served.max_batch_size > 0 else ()) + tuple(1 for _ in first.dims or (1,))
    return {first.name: np.array([text.encode("utf-8")], dtype=np.object_).reshape(shape)}
