"""How an export is batched by Triton, as names and numbers: light enough for the CLI to import without torch.

* ``padded``: a request is a padded ``[batch, length]`` batch with its attention mask; Triton's dynamic batcher
  merges only requests of equal length.
* ``ragged``: a request is one text ``[1, length]``; Triton merges any lengths into one flat tensor plus each
  request's end offset (see :mod:`exporter.export.ragged`).
"""
BATCHING_MODES = ("padded", "ragged")
OFFSETS_INPUT = "offsets"  # forward() argument and batch_input target_name
OFFSETS_KIND = "BATCH_ACCUMULATED_ELEMENT_COUNT"
OFFSETS_TYPE = "TYPE_INT32"  # the backend refuses TYPE_INT64 batch inputs (only INT32 and FP32)
RAGGED_INPUT = "input_ids"
# Rows x padded length per encoder call. Chosen by measurement (benchmarks/ragged/README.md): MiniLM served on NVIDIA's
# backend, 64 clients of mixed-length text, 2 CPU cores: budget 128/256/512/1024/2048/4096 gave 184/195/175/149/101/56
# seq/s. On a CPU, bigger chunks only add padding work; 256 was best at 64 clients and close to best at 16.
DEFAULT_TOKEN_BUDGET = 256
# What a client sends to each variant (tei_export.json ``client``; see variants.py).
PADDED_TOKENS = "padded tokens"
RAGGED_TOKENS = "ragged tokens"
