#!/usr/bin/env bash
# Multilingual GLM pretraining under the deepspeed launcher: the mGLM recipe (objective mix 0.5/0.3/0.2,
# [dBLOCK] on 10% of the span inputs, 2% short-sequence batches,
# lr 1e-4 from the DeepSpeed JSON, language temperature 0.3, linear decay to 0.1 lr at 400k of 500k steps).
#
#   DATA=stores/mglm SAVE=checkpoints/mglm bash scripts/ds_pretrain_multilingual.sh            # one node, all GPUs
#   NUM_NODES=8 HOSTFILE=hostfile MP_SIZE=2 bash scripts/ds_pretrain_multilingual.sh          # a cluster
#   PRESET=cpu-tiny NUM_GPUS=2 DATA=... SAVE=... bash scripts/ds_pretrain_multilingual.sh --train-iters 20
#
# Env (defaults): NUM_GPUS (all visible GPUs; on CPU: processes, 1), NUM_NODES (1), HOSTFILE (none),
# MP_SIZE (1), MODEL (config/model/mglm-1b.json), DS_CONFIG (config/ds/zero1_bf16.json), DATA (required),
# SAVE (checkpoints/mglm), TOKENIZER (recorded in the store), MASTER_PORT (random), PRESET (mglm | cpu-tiny | cpu-small).
# Flags given after the script name are appended and override the recipe's (argparse: last one wins).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_launch_env.sh"

PRESET="${PRESET:-mglm}"
: "${DATA:?set DATA to a store made by tools/preprocess_data.py}"
SAVE="${SAVE:-checkpoints/mglm}"

case "$PRESET" in
  mglm)
    MODEL="${MODEL:-config/model/mglm-1b.json}"; DS_CONFIG="${DS_CONFIG:-config/ds/zero1_bf16.json}"
    RECIPE=(--seq-length 512 --train-iters 500000 --lr-decay-style linear --lr-decay-iters 400000
            --lr-decay-ratio 0.1 --warmup 0.02 --checkpoint-activations --log-interval 50 --eval-interval 1000
            --save-interval 5000 --eval-iters 10 --num-workers 2) ;;
  cpu-tiny)
    MODEL="${MODEL:-config/model/glm-tiny.json}"; DS_CONFIG="${DS_CONFIG:-config/ds/cpu_tiny.json}"
    RECIPE=(--seq-length 64 --train-iters 20 --lr-decay-style linear --warmup 0.1 --log-interval 5
            --eval-interval 10 --save-interval 10 --eval-iters 2 --num-workers 0 --device cpu) ;;
  cpu-small)
    MODEL="${MODEL:-config/model/glm-small.json}"; DS_CONFIG="${DS_CONFIG:-config/ds/cpu_demo.json}"
    RECIPE=(--seq-length 128 --train-iters 300 --lr-decay-style cosine --warmup 0.05 --log-interval 10
            --eval-interval 100 --save-interval 100 --eval-iters 4 --num-workers 1 --device cpu) ;;
  *) echo "unknown PRESET=$PRESET (mglm | cpu-tiny | cpu-small)" >&2; exit 2 ;;
esac

# mGLM's objective (config/ds_multi_blockta_large.sh); every preset uses it. --block-mask-prob > 0 adds [dBLOCK]
# to the tokenizer (recorded in the checkpoint).
OBJECTIVE=(--bert-prob 0.5 --gap-sentence-prob 0.3 --avg-block-length 3 --gpt-min-ratio 0.25
           --block-mask-prob 0.1 --short-seq-prob 0.02 --dataset-temperature 0.3)

set -x
exec "$DEEPSPEED" --num_nodes "$NUM_NODES" --num_gpus "$NUM_GPUS" --master_port "$MASTER_PORT" "${HOST[@]}" \
  pretrain_glm.py --deepspeed --deepspeed_config "$DS_CONFIG" --model-config "$MODEL" \
  --model-parallel-size "$MP_SIZE" --train-data "$DATA" --save "$SAVE" "${TOK[@]}" \
  "${OBJECTIVE[@]}" "${RECIPE[@]}" "$@"
