# Shared body of scripts/finetune_<task>.sh (sourced; expects TASK, DEFAULT_DS, RECIPE and "$@").
source "$(dirname "${BASH_SOURCE[0]}")/_launch_env.sh"

: "${CHECKPOINT:?set CHECKPOINT to the pretrained model (--load-pretrained)}"
: "${DATA:?set DATA to the $TASK data folder}"
SAVE="${SAVE:-checkpoints/finetune/$TASK}"
DS_CONFIG="${DS_CONFIG:-$DEFAULT_DS}"
MOD=(); [ -n "${MODEL:-}" ] && MOD=(--model-config "$MODEL")
GPU=(--checkpoint-activations)
[ "$ON_CPU" = 1 ] && GPU=(--device cpu)

set -x
exec "$DEEPSPEED" --num_nodes "$NUM_NODES" --num_gpus "$NUM_GPUS" --master_port "$MASTER_PORT" "${HOST[@]}" \
  finetune_glm.py --deepspeed --deepspeed_config "$DS_CONFIG" --task "$TASK" --data-dir "$DATA" \
  --load-pretrained "$CHECKPOINT" --model-parallel-size "$MP_SIZE" --save "$SAVE" "${TOK[@]}" "${MOD[@]}" \
  "${GPU[@]}" "${RECIPE[@]}" "$@"
