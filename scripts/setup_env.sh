#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install what mglm needs.
# Idempotent: a second run with unchanged requirement files does no pip work at all.
#   source scripts/setup_env.sh          # sets $PY to the venv's python
#   MGLM_PYTHON=python3.12 bash ...       # choose the interpreter used to create the venv
#   MGLM_TORCH="torch==2.13.0"            # the torch requirement installed first (default below)
#   MGLM_TORCH_INDEX=https://download.pytorch.org/whl/cpu   # extra pip index for that one install: on a
#                                         # Linux CPU machine whose index is plain PyPI, where torch==2.13.0
#                                         # is the CUDA build, this index's 2.13.0+cpu wins (PEP 440 local label)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MGLM_VENV:-$ROOT/.venv}"
BASE_PY="${MGLM_PYTHON:-python3}"
TORCH_PIN="${MGLM_TORCH:-torch==2.13.0}"
TORCH_INDEX_ARGS=()  # expanded as ${a[@]+"${a[@]}"}: bash 3.2 (macOS) treats an empty array as unset under -u
if [ -n "${MGLM_TORCH_INDEX:-}" ]; then TORCH_INDEX_ARGS=(--extra-index-url "$MGLM_TORCH_INDEX"); fi

if [ ! -x "$VENV/bin/python" ]; then
  if ! "$BASE_PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "[setup] error: $BASE_PY is not a Python >= 3.10 interpreter; set MGLM_PYTHON to one" >&2
    exit 1
  fi
  echo "[setup] creating virtual environment $VENV"
  "$BASE_PY" -m venv "$VENV"
fi
PY="$VENV/bin/python"

# One stamp per set of requirement files: re-install only when they (or the torch pin) change.
STAMP="$VENV/.mglm-installed"
WANT="$(cat "$ROOT/requirements.txt" "$ROOT/requirements-dev.txt" "$ROOT/requirements-mt5.txt"; echo "$TORCH_PIN")"
# (hashed by the venv's python: sha256sum is not on every system, e.g. macOS)
WANT_SUM="$(printf '%s' "$WANT" | "$PY" -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT_SUM" ]; then
  # torch first, pinned: the requirement files then find it satisfied, so pip never picks another (CUDA) build.
  echo "[setup] installing $TORCH_PIN first${MGLM_TORCH_INDEX:+ (extra index $MGLM_TORCH_INDEX)}"
  "$PY" -m pip install -q --disable-pip-version-check ${TORCH_INDEX_ARGS[@]+"${TORCH_INDEX_ARGS[@]}"} "$TORCH_PIN"
  echo "[setup] installing requirements.txt, requirements-dev.txt and requirements-mt5.txt (mT5 baseline)"
  "$PY" -m pip install -q --disable-pip-version-check -r "$ROOT/requirements.txt" -r "$ROOT/requirements-dev.txt" \
    -r "$ROOT/requirements-mt5.txt"
  echo "$WANT_SUM" > "$STAMP"
else
  echo "[setup] environment up to date ($VENV)"
fi
export PY
export DS_ACCELERATOR="${DS_ACCELERATOR:-$("$PY" -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')}"
