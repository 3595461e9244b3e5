#!/usr/bin/env bash
# Creates (or reuses) the project's virtualenv and installs the pinned dependencies and tei-export itself.
# Sourced by scripts/demo.sh and scripts/test.sh. TEI_EXPORT_VENV overrides the location.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TEI_EXPORT_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"

# A first install is quiet for minutes: each step says what it does and how long it took.
_step_start=$SECONDS
_step() { echo "[set-up $1/5] $2" >&2; _step_start=$SECONDS; }
_done() { echo "             done in $((SECONDS - _step_start)) s" >&2; }
# pip -q, minus the notes about this machine's unused extra index folders.
_pip() { "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$@" 2>&1 | grep -v "is ignored" >&2 || true; }

if [ ! -x "$VENV/bin/python" ]; then
  echo "creating virtualenv $VENV" >&2
  "$PY" -m venv "$VENV"
fi
# Reinstall only when the pins or the package definition changed.
stamp="$VENV/.tei-export-installed"
want="$(cat "$ROOT/requirements.txt" "$ROOT/setup.cfg" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "installing into $VENV (about 2 GB; the first time takes minutes)" >&2
  _step 1 "pip 26.3"
  _pip "pip==26.3"
  _done
  # torch first and pinned: an unpinned torch pulled in by another package would be a multi-GB CUDA build.
  _step 2 "torch 2.13.0 (CPU build, the largest download)"
  _pip "torch==2.13.0"
  _done
  _step 3 "pinned dependencies from requirements.txt (transformers, sentence-transformers, tritonclient, the bundled tritonserver, ...)"
  _pip -r "$ROOT/requirements.txt"
  _done
  _step 4 "tei-export itself (editable: the checkout's code is what runs)"
  # setuptools says "Editable installation ... Please be careful with folders ..." for every install that maps a
  # folder into the package (templates/ becomes exporter.templates): information only, nothing to act on.
  PYTHONWARNINGS="ignore:Editable installation" _pip --no-deps --no-build-isolation -e "$ROOT"
  _done
  _step 5 "checking that torch, transformers, sentence-transformers, tritonclient and tei-export import"
  "$VENV/bin/python" -c "import torch, transformers, sentence_transformers, tritonclient.grpc, exporter" \
    || { echo "error: the virtualenv $VENV is incomplete; see the pip output above" >&2; exit 1; }
  _done
  echo "$want" > "$stamp"
  echo "set-up complete: run tei-export as $VENV/bin/tei-export, or 'source $VENV/bin/activate' first" >&2
fi
export PATH="$VENV/bin:$PATH"
export VIRTUAL_ENV="$VENV"
source "$ROOT/scripts/backend.sh"
