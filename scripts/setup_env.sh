#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install what mglm needs.
# Idempotent: a second run with unchanged requirement files does no pip work at all.
#   source scripts/setup_env.sh          # sets $PY to the venv's python
#   MGLM_PYTHON=python3.12 bash ...       # choose the interpreter used to create the venv
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MGLM_VENV:-$ROOT/.venv}"
BASE_PY="${MGLM_PYTHON:-python3}"
TORCH_PIN="${MGLM_TORCH:-torch==2.13.0}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment $VENV"
  "$BASE_PY" -m venv "$VENV"
fi
PY="$VENV/bin/python"

# One stamp per set of requirement files: re-install only when they (or the torch pin) change.
STAMP="$VENV/.mglm-installed"
WANT="$(cat "$ROOT/requirements.txt" "$ROOT/requirements-dev.txt" "$ROOT/requirements-mt5.txt"; echo "$TORCH_PIN")"
WANT_SUM="$(printf '%s' "$WANT" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT_SUM" ]; then
  echo "[setup] installing $TORCH_PIN first (CPU wheel on CPU machines; keeps pip from pulling a CUDA build)"
  "$PY" -m pip install -q --disable-pip-version-check "$TORCH_PIN"
  echo "[setup] installing requirements.txt, requirements-dev.txt and requirements-mt5.txt (mT5 baseline)"
  "$PY" -m pip install -q --disable-pip-version-check -r "$ROOT/requirements.txt" -r "$ROOT/requirements-dev.txt" \
    -r "$ROOT/requirements-mt5.txt"
  echo "$WANT_SUM" > "$STAMP"
else
  echo "[setup] environment up to date ($VENV)"
fi
export PY
export DS_ACCELERATOR="${DS_ACCELERATOR:-$("$PY" -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')}"
