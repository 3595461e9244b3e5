#!/usr/bin/env bash
# Makes benchmarks/models/<shape>/ (results.json, bench.png, table.txt) for a ModernBERT-base-shaped and a
# Qwen3-0.6B-shaped model (random weights, real layer shapes; benchmarks/models/make_model.py): each exported padded
# and --batching ragged into one repository, then `tei-export bench` on mixed-length text at 1/4/16/64 clients,
# served on NVIDIA's backend beside in-process SentenceTransformer.encode(), ratios in one run, the CPU named in
# results.json. Extra arguments go to `tei-export bench`. Takes tens of minutes on 2 cores.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
cd "$ROOT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
status=0
for shape in ${TEI_EXPORT_BENCH_SHAPES:-modernbert-base qwen3-0.6b}; do
  src="benchmarks/out/models-src/$shape"
  repo="benchmarks/out/models-repo-$shape"
  [ -d "$src/st" ] || python benchmarks/models/make_model.py "$shape" "$src" >/dev/null
  name="${shape//[-.]/_}"
  tei-export trace "$src/st" --out "$repo" --name "$name" --max-batch-size 16 --force
  tei-export trace "$src/st" --out "$repo" --name "${name}_ragged" --batching ragged --max-batch-size 64 --force
  mkdir -p "benchmarks/models/$shape"
  tei-export bench "$repo" --model "$name" --workload mixed --no-bf16 --no-pt2 --no-onnx --no-infinity \
    --backend nvidia --out "benchmarks/models/$shape" "$@" > "benchmarks/models/$shape/table.txt" || status=$?
  cat "benchmarks/models/$shape/table.txt"
done
exit "$status"
