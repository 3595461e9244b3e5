#!/usr/bin/env bash
# Creates (or reuses) the project's virtualenv and installs the pinned dependencies and tei-export itself.
# Sourced by scripts/demo.sh and scripts/test.sh. TEI_EXPORT_VENV overrides the location.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TEI_EXPORT_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "creating virtualenv $VENV" >&2
  "$PY" -m venv "$VENV"
fi
# Reinstall only when the pins or the package definition changed.
stamp="$VENV/.tei-export-installed"
want="$(cat "$ROOT/requirements.txt" "$ROOT/setup.cfg" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "installing pinned dependencies into $VENV (torch 2.13.0 CPU first)" >&2
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "pip==26.3" 2>&1 | grep -v "is ignored" >&2 || true
  # torch first and pinned: an unpinned torch pulled in by another package would be a multi-GB CUDA build.
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "torch==2.13.0" 2>&1 | grep -v "is ignored" >&2 || true
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$ROOT/requirements.txt" 2>&1 \
    | grep -v "is ignored" >&2 || true
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e "$ROOT" 2>&1 \
    | grep -v "is ignored" >&2 || true
  "$VENV/bin/python" -c "import torch, transformers, sentence_transformers, tritonclient.grpc, exporter" \
    || { echo "error: the virtualenv $VENV is incomplete; see the pip output above" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"
export VIRTUAL_ENV="$VENV"
