#!/usr/bin/env bash
# XQuAD: finetune on SQuAD v1.1 (English), evaluate zero-shot on every xquad.<lang>.json as generation into a
# blank (tasks/xquad.py). mGLM's effective hyperparameters (mGLM config_tasks): 8 GPUs x micro-batch 2, lr 1e-5
# (Adam 0.9/0.95, wd 0.01, fp16, clip 1.0; all in config/tasks/xquad.json), 10 epochs, no warmup, linear
# decay, label smoothing 0.1, source 512 / target 64 tokens, beam search with 20 beams, length penalty 0.
#
#   CHECKPOINT=checkpoints/mglm DATA=download/squad bash scripts/finetune_xquad.sh
#   ... bash scripts/finetune_xquad.sh --select-on all-dev --qa-na-train drop --qa-aggregate first   # as mGLM
#
# Env (defaults): CHECKPOINT (required: --load-pretrained), DATA (required: folder with train-v1.1.json and
# the xquad.<lang>.json files, in it, in xquad/ under it or in the sibling ../xquad/), NUM_GPUS (all visible;
# CPU: 1), MP_SIZE (1), NUM_NODES (1), HOSTFILE, DS_CONFIG (config/tasks/xquad.json), SAVE
# (checkpoints/finetune/xquad), TOKENIZER, MODEL (both recorded in the checkpoint), MASTER_PORT (random).
# Flags after the script name are appended (argparse: last one wins).
set -euo pipefail
TASK=xquad
DEFAULT_DS=config/tasks/xquad.json
RECIPE=(--epochs 10 --seq-length 512 --tgt-seq-length 64 --min-tgt-length 0 --num-beams 20 --length-penalty 0
        --label-smoothing 0.1 --warmup 0 --lr-decay-style linear --lr-decay-ratio 0 --eval-batch-size 8
        --eval-epoch 1 --log-interval 50)
source "$(dirname "${BASH_SOURCE[0]}")/_finetune_launch.sh"
