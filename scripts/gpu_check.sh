#!/usr/bin/env bash
# The GPU check of issue 15 (one command on a machine with one CUDA device, from the repository root):
#   bash scripts/gpu_check.sh
# 1. the environment (nvidia-smi, python, torch, CUDA), 2. the `gpu` tests, 3. benchmarks/model_step.py for
# config/model/mglm-1b.json in bf16: eager at batch 8 and 16 (the config's dropout 0.1: split SDPA path) and
# batch 8 with distinct Part-A lengths, eager at dropout 0 (FlexAttention block mask), then --compile.
# Every part is bounded by `timeout` and the whole run by GPU_CHECK_BUDGET_S (default 480 s); a part that
# fails or times out is recorded and the next one runs. Everything goes to ${OUT:-gpu_results}/ (env.txt,
# gpu_tests.log, one JSON per model_step run, model_step.log, summary.txt); the summary (MFU per case) is
# printed last. Python: .venv/bin/python when its torch sees CUDA, else python3. Without CUDA it says so
# and exits 3 at once. Exit status: 0 when every part passed, else 1.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RESULTS="${OUT:-gpu_results}"
mkdir -p "$RESULTS"
BUDGET="${GPU_CHECK_BUDGET_S:-480}"
START=$SECONDS
export PYTHONUNBUFFERED=1

PY=""
for cand in .venv/bin/python python3 python; do
  if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
    PY="$cand"; break
  fi
done
if [ -z "$PY" ]; then
  echo "gpu_check: no CUDA device: none of .venv/bin/python, python3, python imports a torch that sees one" \
    "(nothing run; see README 'GPUs and clusters')" | tee "$RESULTS/summary.txt" >&2
  exit 3
fi

{
  echo "date: $(date -u)"; echo "python: $PY ($("$PY" --version 2>&1))"
  "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "device", torch.cuda.get_device_name())'
  nvidia-smi 2>&1 || echo "nvidia-smi: not available"
  "$PY" -m pip list 2>/dev/null | grep -iE '^(torch|triton|pytest|sentencepiece) ' || true
} > "$RESULTS/env.txt" 2>&1
cat "$RESULTS/env.txt"

STATUS=()
# run NAME LIMIT_S CMD...: at most LIMIT_S seconds and never past the budget; records NAME's outcome.
run() {
  local name=$1 limit=$2; shift 2
  local left=$((BUDGET - (SECONDS - START)))
  if [ "$left" -lt 20 ]; then STATUS+=("$name: skipped (budget of ${BUDGET} s spent)"); return; fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "=== $name (at most ${limit} s)"
  local t0=$SECONDS rc=0
  timeout --signal=INT --kill-after=15 "$limit" "$@" || rc=$?
  local took=$((SECONDS - t0))
  if [ "$rc" -eq 0 ]; then STATUS+=("$name: ok (${took} s)")
  elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then STATUS+=("$name: TIMED OUT after ${took} s")
  else STATUS+=("$name: FAILED, exit $rc (${took} s)"); fi
}

run "gpu tests" 150 bash -o pipefail -c "'$PY' -m pytest -m gpu tests/test_gpu.py tests/test_attention_sep.py -q -p no:cacheprovider \
  2>&1 | tee '$RESULTS/gpu_tests.log'"
STEP=(benchmarks/model_step.py --model config/model/mglm-1b.json --device cuda --dtype bf16)
run "mglm-1b eager" 120 bash -o pipefail -c "'$PY' ${STEP[*]} --batch 8 16 --sep same random --out '$RESULTS/step_eager.json' \
  2>&1 >/dev/null | tee -a '$RESULTS/model_step.log'"
run "mglm-1b eager dropout 0 (flex)" 120 bash -o pipefail -c "'$PY' ${STEP[*]} --batch 8 --dropout 0 --out '$RESULTS/step_flex.json' \
  2>&1 >/dev/null | tee -a '$RESULTS/model_step.log'"
run "mglm-1b compile" 240 bash -o pipefail -c "'$PY' ${STEP[*]} --batch 8 --compile --out '$RESULTS/step_compile.json' \
  2>&1 >/dev/null | tee -a '$RESULTS/model_step.log'"

{
  echo "=== gpu_check summary ($((SECONDS - START)) s)"
  printf '%s\n' "${STATUS[@]}"
  grep -E '(passed|failed|error)' "$RESULTS/gpu_tests.log" 2>/dev/null | tail -1
  "$PY" - "$RESULTS" <<'EOF'
import json, pathlib, sys
for f in sorted(pathlib.Path(sys.argv[1]).glob("step_*.json")):
    r = json.loads(f.read_text())
    print(f"{f.name}: {r['device_name']}, torch {r['torch']}, matmul {r['matmul_flops'] / 1e12:.0f} TFLOP/s, "
          f"dropout {r['attention_dropout']}, checkpointing {r['checkpoint_activations']}, compile {r['compile']}")
    for c in r["cases"]:
        if "error" in c:
            print(f"  b{c['batch']} sep {c['sep']}: {c['error']}")
            continue
        mfu = "n/a" if c["mfu"] is None else f"{100 * c['mfu']:.1f} %"
        print(f"  b{c['batch']} sep {c['sep']:6s} {c['attention_path']:10s} step {1e3 * c['step_s']:7.1f} ms  "
              f"{c['tokens_per_s']:8.0f} tok/s  MFU {mfu}  of matmul {100 * c['ratio_to_matmul']:.1f} %  "
              f"peak {(c['peak_memory_bytes'] or 0) / 2**30:.1f} GiB  first step {c['first_step_s']:.1f} s")
EOF
} 2>&1 | tee "$RESULTS/summary.txt"
for s in "${STATUS[@]}"; do case "$s" in *": ok "*) ;; *) exit 1 ;; esac; done
exit 0
