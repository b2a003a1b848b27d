#!/usr/bin/env bash
# PAWS-X: finetune on English, evaluate zero-shot on every language in $DATA (cloze, pattern 0).
# mGLM's effective hyperparameters (mGLM task_pawsx.sh): 8 GPUs x micro-batch 32, lr 1e-5 (Adam 0.9/0.999,
# wd 0, fp32, clip 1000; all in config/tasks/pawsx.json), 20 epochs, no warmup, linear decay to 0, seq 256.
# (mGLM also trained every example with all 4 patterns; here one pattern per run: --pattern-id 0..3.)
#
#   CHECKPOINT=checkpoints/mglm DATA=download/x-final bash scripts/finetune_pawsx.sh
#
# Env: as scripts/finetune_xnli.sh (DATA: x-final/ or its parent, or XTREME's pawsx/ folder;
# DS_CONFIG default config/tasks/pawsx.json; SAVE default checkpoints/finetune/pawsx).
set -euo pipefail
TASK=pawsx
DEFAULT_DS=config/tasks/pawsx.json
RECIPE=(--epochs 20 --seq-length 256 --pattern-id 0 --warmup 0 --lr-decay-style linear --lr-decay-ratio 0
        --eval-batch-size 16 --eval-epoch 1 --log-interval 50)
source "$(dirname "${BASH_SOURCE[0]}")/_finetune_launch.sh"
