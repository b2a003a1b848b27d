#!/usr/bin/env bash
# XNLI: finetune on English MultiNLI, evaluate zero-shot on every language in $DATA (cloze, pattern 4).
# mGLM's effective hyperparameters (mGLM task_xnli.sh): 8 GPUs x micro-batch 32, lr 1e-5 (Adam 0.9/0.999,
# wd 0, fp32, clip 1000; all in config/tasks/xnli.json), 10 epochs, no warmup, linear decay to 0, seq 256.
#
#   CHECKPOINT=checkpoints/mglm DATA=download/xnli bash scripts/finetune_xnli.sh
#   ... bash scripts/finetune_xnli.sh --select-on all-dev        # mGLM's model selection (all-language dev)
#
# Env (defaults): CHECKPOINT (required: --load-pretrained; ours, GLM/SAT layout or a released .pt), DATA
# (required: XTREME xnli/ folder or the folder holding XNLI-1.0/ and XNLI-MT-1.0/), NUM_GPUS (all visible;
# CPU: 1), MP_SIZE (1), NUM_NODES (1), HOSTFILE, DS_CONFIG (config/tasks/xnli.json), SAVE
# (checkpoints/finetune/xnli), TOKENIZER (recorded in the checkpoint), MODEL (recorded in the checkpoint),
# MASTER_PORT (random). Flags after the script name are appended (argparse: last one wins).
set -euo pipefail
TASK=xnli
DEFAULT_DS=config/tasks/xnli.json
RECIPE=(--epochs 10 --seq-length 256 --pattern-id 4 --warmup 0 --lr-decay-style linear --lr-decay-ratio 0
        --eval-batch-size 16 --eval-epoch 1 --log-interval 50)
source "$(dirname "${BASH_SOURCE[0]}")/_finetune_launch.sh"
