#!/usr/bin/env bash
# The demo command: set up the environment (idempotent), then run the demo on the bundled sample data.
# Outputs go to ${OUT:-demo_output}/. Extra arguments go to tools/demo.py (see --help).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/setup_env.sh
exec "$PY" tools/demo.py --out "${OUT:-demo_output}" "$@"
