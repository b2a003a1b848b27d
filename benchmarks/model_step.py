"""fp32 training-step throughput of GLMModel vs the machine's fp32 matmul rate (prints JSON).

ratio = (model FLOPs per token * tokens/s) / (2048^3 matmul FLOP/s), both measured in this process;
model FLOPs per token = 72*L*h^2 + 12*L*s*h + 6*V*h. Not part of the test suite.
``--compile`` also times the same step with the model under ``torch.compile`` (``nn.Module.compile``),
interleaved with the eager step in this process, and reports compiled/eager (median step times) and the
first compiled step's time (the compilation).
Usage: python benchmarks/model_step.py [--steps N] [--only small|base] [--compile]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere

from model import GLMConfig, GLMModel, glm_lm_loss, param_groups_for_weight_decay
from model.glm import model_flops_per_token

CASES = {
    "small": (dict(num_layers=4, hidden_size=256, num_attention_heads=4, vocab_size=32000,
                   max_sequence_length=256), 256, 8),
    "base": (dict(num_layers=12, hidden_size=512, num_attention_heads=8, vocab_size=32000,
                  max_sequence_length=512), 512, 4),
}


def matmul_flops(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2.0 * n ** 3 / best


def train_step(cfg: GLMConfig, seq: int, batch: int, compile: bool = False) -> Callable[[], None]:
    """One fp32 training step (forward, backward, AdamW) of a fresh GLMModel on a fixed random batch,
    every position scored; call it repeatedly to time it. ``compile``: the model under torch.compile."""
    torch.manual_seed(0)
    model = GLMModel(cfg).train()
    if compile:
        model.compile()
    opt = torch.optim.AdamW(param_groups_for_weight_decay(model, 0.01), lr=1e-4)
    ids = torch.randint(0, cfg.vocab_size, (batch, seq))
    pos = torch.stack([torch.arange(seq).expand(batch, seq), torch.zeros(batch, seq, dtype=torch.long)], 1)
    sep = torch.full((batch,), seq // 2)
    loss_mask = torch.ones(batch, seq)

    def step() -> None:
        loss = glm_lm_loss(model(ids, pos, sep)[0], ids, loss_mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def step_time(cfg: GLMConfig, seq: int, batch: int, steps: int) -> float:
    step = train_step(cfg, seq, batch)
    times = []
    for i in range(steps + 1):
        t = time.perf_counter()
        step()
        if i > 0:  # first step warms allocator / kernels
            times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]  # median: the machine is shared and noisy


def compile_ratio(cfg: GLMConfig, seq: int, batch: int, steps: int) -> dict:
    """Median compiled and eager step times, timed alternately (the shared machine's load hits both)."""
    eager, compiled = train_step(cfg, seq, batch), train_step(cfg, seq, batch, compile=True)
    eager()
    t = time.perf_counter()
    compiled()  # compiles forward and backward
    first = time.perf_counter() - t
    compiled()  # a second call may still specialise (e.g. the optimizer state now exists)
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    for _ in range(steps):
        for name, step in (("eager", eager), ("compiled", compiled)):
            t = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t)
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    return {"eager_step_s": med["eager"], "compiled_step_s": med["compiled"],
            "compiled_over_eager": med["compiled"] / med["eager"], "first_compiled_step_s": first}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--only", choices=sorted(CASES), default=None)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--compile", action="store_true", help="also time the torch.compile'd model")
    args = parser.parse_args(argv)
    mm = matmul_flops()
    out = {"torch": torch.__version__, "threads": torch.get_num_threads(), "matmul_flops": mm, "cases": {}}
    for name, (kw, seq, batch) in CASES.items():
        if args.only and name != args.only:
            continue
        cfg = GLMConfig(**kw, hidden_dropout=args.dropout, attention_dropout=args.dropout)
        t = step_time(cfg, seq, batch, args.steps)
        tok_s = seq * batch / t
        flops = model_flops_per_token(cfg, seq) * tok_s
        out["cases"][name] = {"seq": seq, "batch": batch, "step_s": t, "tokens_per_s": tok_s,
                              "model_flops": flops, "ratio": flops / mm}
        if args.compile:
            out["cases"][name]["compile"] = compile_ratio(cfg, seq, batch, args.steps)
    out["matmul_flops_after"] = matmul_flops()
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
