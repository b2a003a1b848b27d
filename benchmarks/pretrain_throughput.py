"""End-to-end pretraining throughput vs the bare model step, measured in one process.

    python benchmarks/pretrain_throughput.py                      # glm-small shape on the sample corpus, CPU
    python benchmarks/pretrain_throughput.py --model-config config/model/mglm-1b.json --seq-length 512 \
        --batch-size 8 --bf16 --steps 30                           # on a GPU

1. The loop: ``pretrain_glm.main`` (real loader with workers, blank-infilling collator, engine, logging)
   for ``--steps`` steps; tokens/s from its log intervals, the first interval dropped as warm-up.
2. The bare step: the same model, optimizer and micro-batch shape, forward + backward + AdamW on one
   pre-built batch, no data pipeline, no logging; ``--steps / 2`` steps before and again after the loop,
   the rate from the median step time (the loop's from the median interval), so that a load spike on a
   shared machine biases neither side.

Prints JSON: both rates, ``loop_over_bare`` (1.0 = the loop costs nothing) and the loop overhead in
percent (goal: < 5 %), plus MFU when a peak is known (``MGLM_PEAK_TFLOPS`` or a recognised GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402


def bare_step_times(model_config, batch, steps: int, device, bf16: bool) -> list[float]:
    """Seconds of each of ``steps`` bare steps, after 3 warm-up steps."""
    from model import GLMModel
    from model.glm import glm_lm_loss, param_groups_for_weight_decay

    model = GLMModel(model_config).to(device)
    opt = torch.optim.AdamW(param_groups_for_weight_decay(model, 0.01), lr=1e-4, betas=(0.9, 0.98), eps=1e-6)
    b = {k: v.to(device) for k, v in batch.items() if torch.is_tensor(v)}
    ctx = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else (lambda: torch.autocast(device.type, enabled=False))

    def step():
        with ctx():
            logits, _ = model(b["text"], b["position_id"], b["sep"], logit_mask=b["loss_mask"] != 0)
        loss = glm_lm_loss(logits, b["target"], b["loss_mask"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(3):
        step()
    times = []
    for _ in range(steps):
        sync()
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-config", default="config/model/glm-small.json")
    ap.add_argument("--seq-length", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--num-workers", type=int, default=1)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--corpus", default=str(REPO / "data/sample/corpus"))
    ap.add_argument("--tokenizer", default=str(REPO / "data/sample/tokenizer/mglm-sample.model"))
    a = ap.parse_args(argv)
    os.chdir(REPO)

    import pretrain_glm
    from data_utils.blank_infilling import BlankInfillingCollator, BlankInfillingConfig
    from data_utils.corpus import open_stores
    from data_utils.datasets import BlockDataset, BlockDatasetConfig
    from data_utils.sentence_end import SentenceEnds
    from data_utils.tokenizer import GLMTokenizer
    from model.config import build_model_config
    from model.glm import model_flops_per_token
    from tools.preprocess_data import main as preprocess
    from training.arguments import parse_pretrain_args
    from training.setup import peak_flops

    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        preprocess([a.corpus, "-o", str(store), "--tokenizer", a.tokenizer, "--no-progress"])
        interval = max(a.steps // 4, 1)
        # The loop validates once at its last step (not timed); one batch keeps the run short.
        argv_loop = ["--model-config", a.model_config, "--train-data", str(store), "--seq-length", str(a.seq_length),
                     "--batch-size", str(a.batch_size), "--train-iters", str(a.steps), "--log-interval", str(interval),
                     "--eval-interval", str(10**9), "--eval-iters", "1", "--save-interval", str(10**9),
                     "--num-workers", str(a.num_workers), "--log-dir", str(Path(tmp) / "logs"),
                     "--no-tensorboard"] + (["--bf16"] if a.bf16 else [])
        cfg = parse_pretrain_args(argv_loop)

        # The bare step on a batch of the same shape distribution (one real collated micro-batch).
        tok = GLMTokenizer(a.tokenizer)
        ends = SentenceEnds(tok)
        ds = BlockDataset(open_stores(store), BlockDatasetConfig(seq_length=a.seq_length), tok.cls_id, tok.eos_id, ends)
        collator = BlankInfillingCollator.from_tokenizer(BlankInfillingConfig(), tok, ends)
        batch = collator([ds[i] for i in range(a.batch_size)], 0, mode="bert")
        model_config = build_model_config(cfg.model, tok.padded_vocab_size(), seq_length=cfg.data.seq_length,
                                          tensor_parallel_size=cfg.train.model_parallel_size)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        half = max(a.steps // 2, 1)
        before = bare_step_times(model_config, batch, half, device, a.bf16)
        loop = pretrain_glm.run(cfg)
        rates = [h["tokens_per_s"] for h in loop["history"][1:]]  # drop the warm-up interval
        loop_rate = statistics.median(rates)
        after = bare_step_times(model_config, batch, half, device, a.bf16)
        # Medians on both sides: a transient load spike on a shared machine moves neither.
        tokens = batch["text"].numel()
        bare_rate = tokens / statistics.median(before + after)
        bare_before, bare_after = tokens / statistics.median(before), tokens / statistics.median(after)

    flops = model_flops_per_token(model_config, a.seq_length)
    peak = peak_flops(device)
    out = {
        "model_config": a.model_config,
        "seq_length": a.seq_length,
        "batch_size": a.batch_size,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "loop_tokens_per_s": round(loop_rate, 1),
        "bare_step_tokens_per_s": round(bare_rate, 1),
        "bare_before_after_tokens_per_s": [round(bare_before, 1), round(bare_after, 1)],
        "loop_over_bare": round(loop_rate / bare_rate, 4),
        "loop_overhead_percent": round(100 * (1 - loop_rate / bare_rate), 2),
        "loop_mfu": round(loop_rate * flops / peak, 4) if peak else None,
        "bare_mfu": round(bare_rate * flops / peak, 4) if peak else None,
    }
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
