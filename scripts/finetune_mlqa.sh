#!/usr/bin/env bash
# MLQA: finetune on SQuAD v1.1 (English), evaluate zero-shot on the 7 matched context/question languages of
# MLQA_V1 dev and test (tasks/mlqa.py; official MLQA metric in the context language). mGLM's effective
# hyperparameters (mGLM seq_mlqa.sh): 8 GPUs x micro-batch 2, lr 1e-5 (Adam 0.9/0.95, wd 0.01, fp16, clip 1.0;
# config/tasks/mlqa.json), 10 epochs, no warmup, label smoothing 0.1, source 512 / target 64, 5 beams.
#
#   CHECKPOINT=checkpoints/mglm DATA=download/mlqa bash scripts/finetune_mlqa.sh
#   ... bash scripts/finetune_mlqa.sh --languages en de-en        # add a cross-lingual <context>-<question> pair
#
# Env (defaults): CHECKPOINT (required), DATA (required: MLQA_V1/ itself or a folder holding it or mlqa/MLQA_V1;
# SQuAD's train-v1.1.json in it, in squad/ under it or in the sibling ../squad/), NUM_GPUS (all visible; CPU:
# 1), MP_SIZE (1), NUM_NODES (1), HOSTFILE, DS_CONFIG (config/tasks/mlqa.json), SAVE (checkpoints/finetune/
# mlqa), TOKENIZER, MODEL, MASTER_PORT. Flags after the script name are appended (last one wins).
set -euo pipefail
TASK=mlqa
DEFAULT_DS=config/tasks/mlqa.json
RECIPE=(--epochs 10 --seq-length 512 --tgt-seq-length 64 --min-tgt-length 0 --num-beams 5 --length-penalty 0
        --label-smoothing 0.1 --warmup 0 --lr-decay-style linear --lr-decay-ratio 0 --eval-batch-size 8
        --eval-epoch 1 --log-interval 50)
source "$(dirname "${BASH_SOURCE[0]}")/_finetune_launch.sh"
