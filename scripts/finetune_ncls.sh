#!/usr/bin/env bash
# NCLS cross-lingual summarization (one direction per run: en2zh or zh2en, from the files in $DATA or
# --ncls-direction). Source [CLS] article " 中文摘要：" / " tl;dr:" [sMASK], summary generated into the blank.
# mGLM's effective hyperparameters (mGLM seq_ncls.sh): 4 GPUs x micro-batch 8, lr 5e-5 (Adam 0.9/0.999, wd 0,
# clip 1.0; in config/tasks/ncls.json), fp16 on GPUs, 10 epochs, no warmup, linear decay to 0, label
# smoothing 0.1; source 768 / target 160 tokens; decoding: beam 5, length penalty 0.7, no repeated 3-gram,
# 100..160 tokens (the task's defaults too, tasks/ncls.py). ROUGE-1/2/L in char, word and mglm tokenisations.
#
#   CHECKPOINT=checkpoints/mglm DATA=download/NCLS-Data/EN2ZHSUM bash scripts/finetune_ncls.sh
#   ... bash scripts/finetune_ncls.sh --ncls-direction zh2en --rouge-tokenization mglm
#   TASK=scisummnet_zh DATA=download/scisummnet bash scripts/finetune_ncls.sh   # ScisummNet-zh, same recipe
#
# Env (defaults): CHECKPOINT (required: --load-pretrained), DATA (required: NCLS release files
# EN2ZHSUM_*.txt / ZH2ENSUM_*.txt or mGLM's {train,dev,test}.txt), TASK (ncls), NUM_GPUS (all visible;
# CPU: 1), MP_SIZE (1), NUM_NODES (1), HOSTFILE, DS_CONFIG (config/tasks/ncls.json), SAVE
# (checkpoints/finetune/$TASK), TOKENIZER, MODEL (recorded in the checkpoint), MASTER_PORT (random).
# Flags after the script name are appended (argparse: last one wins).
set -euo pipefail
TASK="${TASK:-ncls}"
DEFAULT_DS=config/tasks/ncls.json
RECIPE=(--epochs 10 --seq-length 768 --tgt-seq-length 160 --min-tgt-length 100 --num-beams 5
        --length-penalty 0.7 --no-repeat-ngram-size 3 --label-smoothing 0.1 --warmup 0 --lr-decay-style linear
        --lr-decay-ratio 0 --eval-batch-size 4 --eval-epoch 1 --log-interval 50 --select-on avg-dev)
_PY="${PY:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.venv/bin/python}"; [ -x "$_PY" ] || _PY=python3
if "$_PY" -c 'import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  RECIPE+=(--fp16)
fi
source "$(dirname "${BASH_SOURCE[0]}")/_finetune_launch.sh"
