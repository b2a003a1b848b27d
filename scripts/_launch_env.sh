# Launcher set-up shared by scripts/ds_pretrain_multilingual.sh and scripts/finetune_<task>.sh (sourced).
# Sets ROOT (and cd's there), PY, DEEPSPEED, MP_SIZE, NUM_NODES, NUM_GPUS, MASTER_PORT, the optional flag
# arrays HOST (--hostfile) and TOK (--tokenizer-model), and ON_CPU=1 without CUDA (then OMP_NUM_THREADS is
# split over the ranks, since the launcher sets none and N ranks x all cores oversubscribe the machine).
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PY:-$ROOT/.venv/bin/python}"; [ -x "$PY" ] || PY=python3
DEEPSPEED="${DEEPSPEED:-$(dirname "$PY")/deepspeed}"; [ -x "$DEEPSPEED" ] || DEEPSPEED=deepspeed
MP_SIZE="${MP_SIZE:-1}"
NUM_NODES="${NUM_NODES:-1}"
MASTER_PORT="${MASTER_PORT:-$(( 20000 + RANDOM % 20000 ))}"
if [ -z "${NUM_GPUS:-}" ]; then
  NUM_GPUS=$("$PY" -c 'import torch; print(torch.cuda.device_count() or 1)')
fi
HOST=(); [ -n "${HOSTFILE:-}" ] && HOST=(--hostfile "$HOSTFILE")
TOK=(); [ -n "${TOKENIZER:-}" ] && TOK=(--tokenizer-model "$TOKENIZER")
ON_CPU=0
if ! "$PY" -c 'import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  ON_CPU=1
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(( $(nproc) / NUM_GPUS > 0 ? $(nproc) / NUM_GPUS : 1 ))}"
  export DS_ACCELERATOR=cpu
fi
