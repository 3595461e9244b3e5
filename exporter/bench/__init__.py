"""`tei-export bench`: one run, one corpus, one thread count, every way of computing the same embeddings.

Modes, side by side:

* in-process (batch sweep): eager sentence-transformers, the exported TorchScript fp32 ``model.pt``, TorchScript
  bf16 (the repository's bf16 export, else traced here with the same recipe as ``trace --dtype bfloat16``), the
  AOTInductor ``model.pt2`` (the repository's pt2 export, else compiled here as ``trace --format pt2`` does), and
  ONNX Runtime on an ONNX export of the same wrapper;
* served (concurrency sweep, one text per request): the real tritonserver over gRPC and HTTP with token inputs
  (tokenized client-side, padded to length buckets so the dynamic batcher can merge), and over gRPC through the
  text ensemble ``<name>_text`` when the repository has one; and a peer server, infinity-emb
  (``infinity_emb v2 --engine torch --device cpu`` on 127.0.0.1, its OpenAI-style ``POST /embeddings``), started and
  stopped here when its executable is found (``--infinity``, ``$TEI_EXPORT_INFINITY``, or on PATH).

Every mode's embeddings are compared with ``SentenceTransformer.encode`` on the workload's texts (an untimed
first pass that doubles as warm-up); the timed part is bounded by a call count and by time. Figures: seq/s,
tokens/s (real tokens, padding excluded), p50/p95/p99 latency per call, ratios to in-process TorchScript fp32 and
ONNX Runtime fp32 of the same run, and achieved model FLOP/s as a fraction of a plain fp32 matmul's FLOP/s on the
same threads (the machine's own limit). Nothing here asserts anything about time: the caller reads the ratios.

The package, by stage: :mod:`.modes` (what is measured), :mod:`.options`, :mod:`.workloads` (the texts, tokenized),
:mod:`.machine` (the CPU's own limit, FLOPs), :mod:`.measure` (one in-process cell, parity, percentiles), :mod:`.load`
(the load generator for served cells), :mod:`.in_process` (the in-process models), :mod:`.served` (Triton on each
LibTorch backend), :mod:`.infinity` (the peer server), :mod:`.report` (cells, ratios, targets, the table),
:mod:`.plot`, and :mod:`.run` (the whole run).
"""
from .modes import (EAGER, GRPC, HTTP, IN_PROCESS_MODES, INFINITY, ORT_FP32, PT2_FP32, SERVER_MODES,
                    SERVER_MODES_COMPAT, TEXT_GRPC, TS_BF16, TS_FP32, WORKLOADS)
from .options import BenchOptions
from .report import BenchReport
from .run import run_bench

__all__ = ["BenchOptions", "BenchReport", "run_bench", "EAGER", "GRPC", "HTTP", "IN_PROCESS_MODES", "INFINITY",
           "ORT_FP32", "PT2_FP32", "SERVER_MODES", "SERVER_MODES_COMPAT", "TEXT_GRPC", "TS_BF16", "TS_FP32",
           "WORKLOADS"]
