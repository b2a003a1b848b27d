#!/usr/bin/env bash
# TyDiQA-GoldP: finetune on the English GoldP training questions, evaluate zero-shot on the GoldP dev files of
# all 9 languages (tasks/tydiqa.py; official SQuAD v1.1 metric). mGLM's effective hyperparameters (reference
# 1.12): 8 GPUs x micro-batch 2, lr 1e-5 (Adam 0.9/0.95, wd 0.01, fp16, clip 1.0; config/tasks/tydiqa.json),
# 40 epochs, warmup 0.06, label smoothing 0.1, source 512 / target 64, 5 beams, length penalty 0.
#
#   CHECKPOINT=checkpoints/mglm DATA=download/tydiqa bash scripts/finetune_tydiqa.sh
#
# Env (defaults): CHECKPOINT (required), DATA (required: folder with tydiqa-goldp-v1.1-train/ (XTREME) or
# tydiqa-goldp-v1.1-train.json (official) and tydiqa-goldp-v1.1-dev/), NUM_GPUS (all visible; CPU: 1), MP_SIZE
# (1), NUM_NODES (1), HOSTFILE, DS_CONFIG (config/tasks/tydiqa.json), SAVE (checkpoints/finetune/tydiqa),
# TOKENIZER, MODEL, MASTER_PORT. Flags after the script name are appended (last one wins).
set -euo pipefail
TASK=tydiqa
DEFAULT_DS=config/tasks/tydiqa.json
RECIPE=(--epochs 40 --seq-length 512 --tgt-seq-length 64 --min-tgt-length 0 --num-beams 5 --length-penalty 0
        --label-smoothing 0.1 --warmup 0.06 --lr-decay-style linear --lr-decay-ratio 0 --eval-batch-size 8
        --eval-epoch 1 --log-interval 50)
source "$(dirname "${BASH_SOURCE[0]}")/_finetune_launch.sh"
