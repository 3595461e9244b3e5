"""The modes a bench run measures, by name (the keys of results.json), and the workloads."""
EAGER, TS_FP32, TS_BF16, ORT_FP32 = "eager", "torchscript_fp32", "torchscript_bf16", "onnxruntime_fp32"
PT2_FP32 = "pt2_fp32"
# SentenceTransformer.encode() on a whole workload: it sorts the texts by length and batches them (batch = its
# batch_size), the fairest offline reference for one-text-per-request traffic
ST_ENCODE = "st_encode"
GRPC, HTTP, TEXT_GRPC, INFINITY = "triton_grpc", "triton_http", "triton_text_grpc", "infinity_emb"
# the repository's ragged export of the same source (--batching ragged): one unpadded text per request, any lengths
# merged by Triton
GRPC_RAGGED = "triton_grpc_ragged"
IN_PROCESS_MODES = (EAGER, TS_FP32, TS_BF16, PT2_FP32, ORT_FP32, ST_ENCODE)
SERVER_MODES = (GRPC, HTTP, TEXT_GRPC, GRPC_RAGGED)  # Triton's; INFINITY is served too, by a peer server
# The served modes on the compatibility backend when NVIDIA's is measured too (the plain names are NVIDIA's then)
COMPAT_SUFFIX = "_compat"
SERVER_MODES_COMPAT = tuple(m + COMPAT_SUFFIX for m in SERVER_MODES)
WORKLOADS = ("short", "mixed", "long")
