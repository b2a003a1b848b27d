# Shared body of scripts/finetune_<task>.sh (sourced; expects TASK, DEFAULT_DS, RECIPE and "$@").
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PY:-$ROOT/.venv/bin/python}"; [ -x "$PY" ] || PY=python3
DEEPSPEED="${DEEPSPEED:-$(dirname "$PY")/deepspeed}"; [ -x "$DEEPSPEED" ] || DEEPSPEED=deepspeed

: "${CHECKPOINT:?set CHECKPOINT to the pretrained model (--load-pretrained)}"
: "${DATA:?set DATA to the $TASK data folder}"
SAVE="${SAVE:-checkpoints/finetune/$TASK}"
DS_CONFIG="${DS_CONFIG:-$DEFAULT_DS}"
MP_SIZE="${MP_SIZE:-1}"
NUM_NODES="${NUM_NODES:-1}"
MASTER_PORT="${MASTER_PORT:-$(( 20000 + RANDOM % 20000 ))}"
if [ -z "${NUM_GPUS:-}" ]; then
  NUM_GPUS=$("$PY" -c 'import torch; print(torch.cuda.device_count() or 1)')
fi
TOK=(); [ -n "${TOKENIZER:-}" ] && TOK=(--tokenizer-model "$TOKENIZER")
MOD=(); [ -n "${MODEL:-}" ] && MOD=(--model-config "$MODEL")
HOST=(); [ -n "${HOSTFILE:-}" ] && HOST=(--hostfile "$HOSTFILE")
GPU=(--checkpoint-activations)
if ! "$PY" -c 'import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(( $(nproc) / NUM_GPUS > 0 ? $(nproc) / NUM_GPUS : 1 ))}"
  export DS_ACCELERATOR=cpu
  GPU=(--device cpu)
fi

set -x
exec "$DEEPSPEED" --num_nodes "$NUM_NODES" --num_gpus "$NUM_GPUS" --master_port "$MASTER_PORT" "${HOST[@]}" \
  finetune_glm.py --deepspeed --deepspeed_config "$DS_CONFIG" --task "$TASK" --data-dir "$DATA" \
  --load-pretrained "$CHECKPOINT" --model-parallel-size "$MP_SIZE" --save "$SAVE" "${TOK[@]}" "${MOD[@]}" \
  "${GPU[@]}" "${RECIPE[@]}" "$@"
