"""Training-step throughput of GLMModel against the device's matmul rate and its peak (prints JSON).

Model FLOPs per token (forward + backward, every position scored; activation recomputation not counted)::

    72*L*h^2 + 12*L*s*h + 6*V*h           (``model.glm.model_flops_per_token``)

Default (no ``--model``): the CPU fp32 table of issue 15, two built-in shapes (small, base), one fresh model
per case; ratio = model FLOP/s / this process's 2048^3 fp32 matmul rate. ``--compile`` also times the same
step under ``torch.compile`` (``nn.Module.compile``), interleaved with the eager step, and reports
compiled/eager (median step times) and the first compiled step's time (the compilation).

    python benchmarks/model_step.py [--steps N] [--only small|base] [--dropout P] [--compile]

``--model CONFIG.json`` (any model config, read by ``GLMConfig.from_json_file`` as training reads it): one
model, one AdamW (fused on CUDA), one step per (batch, sep) case at ``--seq`` (default: the config's
``max_sequence_length``), as ``pretrain_glm.py``'s plain engine runs it: ``--dtype bf16`` is
``torch.autocast(bfloat16)`` around the forward with fp32 master weights and an fp32 loss
(``TorchEngine(bf16=True)``); dropout and activation checkpointing as the config says (``--dropout P``,
``--activation-checkpointing on|off`` override them). ``--sep same`` gives every row Part A = seq/2;
``--sep random`` draws each row's Part A length as pretraining's varying rows have it (the split SDPA path
then runs two attention calls per row). Each case: ``--warmup`` untimed steps (the first one's time is
reported: with ``--compile`` it is the compilation), then the median of ``--steps`` steps, each timed between
``torch.cuda.synchronize()`` calls. Reports tokens/s, model FLOP/s, MFU = model FLOP/s / peak
(``training.setup.peak_flops``: ``MGLM_PEAK_TFLOPS`` if set, else 989 TFLOP/s bf16 dense on an H100/H200),
the ratio to the measured matmul rate of the same dtype (8192^3 on CUDA, 2048^3 on the CPU), peak GPU memory
(``torch.cuda.max_memory_allocated``), which attention path the layers took (``flex`` block mask,
``split-sdpa`` or ``dense-mask``), torch / CUDA versions and the device name. ``--out F`` rewrites F after
every case (a run stopped by a timeout keeps the finished cases).

    python benchmarks/model_step.py --model config/model/mglm-1b.json --device cuda --dtype bf16 \\
        --batch 8 16 [--seq 1024] [--compile] [--dropout P] [--out F]

mglm-1b on one H100/H200 (L 24, h 1536, 16 heads of 96, V 250112, s 1024; 1.07e9 parameters), the
arithmetic behind the GPU defaults (batch 8 and 16) and behind expecting 30-45 % MFU, not 50 %:

- model FLOPs per token = 4.08e9 (72 L h^2) + 0.45e9 (12 L s h) + 2.31e9 (6 V h) = 6.84e9; a batch-8 step
  (8192 tokens) is 5.6e13 FLOPs, so 50 % MFU (495 TFLOP/s of 989) is a 113 ms step.
- mglm-1b.json checkpoints every layer: the backward recomputes each layer's forward, 24 L h^2 + 4 L s h =
  1.51e9 more per token, 1.22x the counted FLOPs. 50 % MFU thus needs 61 % of the peak executed (603
  TFLOP/s), while a square 8192^3 bf16 matmul reaches about 80 % (790 TFLOP/s measured on these machines)
  and the model's matmuls are narrower (K = 1536 in three of the four per layer).
- Not matmuls: the fp32 cross entropy over 8192 x 250112 logits (bf16 logits 4.1 GB, fp32 copy 8.2 GB,
  saved softmax 8.2 GB: ~40 GB of memory traffic forward and backward, ~12 ms at ~3.3 TB/s), fused AdamW
  over 1.07e9 fp32 parameters (read p, g, m, v, write p, m, v: 28 B each, 30 GB, ~9 ms), LayerNorm, GELU,
  dropout and residual adds. Together ~25-35 ms next to ~110 ms of matmuls at b8: 30-45 % MFU. Batch 16
  halves the optimizer's share; ``--activation-checkpointing off`` removes the 1.22x (and fits at b8).
- Memory: fp32 weights + grads + Adam moments 16 B x 1.07e9 = 17 GB; autocast's bf16 weight copies 2 GB;
  logits and loss ~10 B x tokens x V = 20.5 GB at b8, 41 GB at b16; the checkpointed layer inputs
  24 x tokens x h x 4 B = 1.2 GB at b8; one layer's recomputed activations ~1 GB. About 42 GB at b8 and
  65 GB at b16, which fit 80 GB; b32 (~110 GB) fits only the H200's 141 GB.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere

from common.errors import UsageError, run_cli
from model import GLMConfig, GLMModel, glm_lm_loss, param_groups_for_weight_decay
from model.glm import BlockMask, model_flops_per_token, num_parameters

CASES = {
    "small": (dict(num_layers=4, hidden_size=256, num_attention_heads=4, vocab_size=32000,
                   max_sequence_length=256), 256, 8),
    "base": (dict(num_layers=12, hidden_size=512, num_attention_heads=8, vocab_size=32000,
                  max_sequence_length=512), 512, 4),
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_flops(n: int = 2048, repeats: int = 5, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> float:
    """FLOP/s of an n^3 matmul (2 n^3 FLOPs) of random ``dtype`` operands: the best of ``repeats`` timings
    after a warm-up (on CUDA each timing is 10 products between synchronisations)."""
    device = torch.device(device)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    inner = 10 if device.type == "cuda" else 1
    for _ in range(3 if device.type == "cuda" else 1):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        for _ in range(inner):
            a @ b
        _sync(device)
        best = min(best, (time.perf_counter() - t) / inner)
    return 2.0 * n ** 3 / best


def build(cfg: GLMConfig, device: torch.device, compile: bool = False) -> tuple[GLMModel, torch.optim.Optimizer]:
    """A fresh GLMModel (seed 0) on ``device`` in train mode and its AdamW (fused on CUDA, as TorchEngine)."""
    torch.manual_seed(0)
    model = GLMModel(cfg).to(device).train()
    if compile:
        model.compile()
    fused = True if device.type == "cuda" else None
    return model, torch.optim.AdamW(param_groups_for_weight_decay(model, 0.01), lr=1e-4, fused=fused)


def batch_inputs(cfg: GLMConfig, seq: int, batch: int, device: torch.device, sep: str = "same"):
    """A fixed random batch: ids [B, s], positions [B, 2, s], ``sep`` [B] (s/2 for every row, or drawn per
    row from 1..s-1 with ``sep="random"``), loss mask of ones [B, s] (every position scored)."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (batch, seq), generator=g)
    pos = torch.stack([torch.arange(seq).expand(batch, seq), torch.zeros(batch, seq, dtype=torch.long)], 1)
    if sep == "random":
        seps = torch.randint(1, seq, (batch,), generator=g)
    else:
        seps = torch.full((batch,), seq // 2)
    return [t.to(device) for t in (ids, pos, seps, torch.ones(batch, seq))]


def make_step(model: GLMModel, opt: torch.optim.Optimizer, inputs: list[torch.Tensor],
              bf16: bool = False) -> Callable[[], torch.Tensor]:
    """One training step (forward, backward, AdamW) on ``inputs``; ``bf16``: the forward under
    ``torch.autocast(bfloat16)`` and the loss outside it, as ``TorchEngine(bf16=True)`` runs it."""
    ids, pos, sep, loss_mask = inputs

    def step() -> torch.Tensor:
        with torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(ids, pos, sep)[0]
        loss = glm_lm_loss(logits, ids, loss_mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    return step


def train_step(cfg: GLMConfig, seq: int, batch: int, compile: bool = False) -> Callable[[], torch.Tensor]:
    """One fp32 CPU training step of a fresh GLMModel on a fixed random batch, every position scored;
    call it repeatedly to time it. ``compile``: the model under torch.compile."""
    cpu = torch.device("cpu")
    model, opt = build(cfg, cpu, compile)
    return make_step(model, opt, batch_inputs(cfg, seq, batch, cpu))


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


def attention_path(model: GLMModel, sep: torch.Tensor, seq: int) -> str:
    """The kernel input the layers get in this training forward, from the model's own choice
    (``GLMTransformer._attention_input``): ``flex`` (FlexAttention block mask), ``split-sdpa`` (two SDPA
    calls per run of equal ``sep``: CUDA under attention dropout) or ``dense-mask`` (the CPU's bool mask)."""
    attn = model.transformer._attention_input(sep, sep.numel(), seq, 0)
    if BlockMask is not None and isinstance(attn, BlockMask):
        return "flex"
    return "split-sdpa" if isinstance(attn, list) else "dense-mask"


def timed_case(model: GLMModel, opt: torch.optim.Optimizer, cfg: GLMConfig, seq: int, batch: int, sep: str,
               bf16: bool, warmup: int, steps: int, peak: float, matmul: float) -> dict:
    """Warm-up, then the median of ``steps`` synchronised step times, and the figures derived from it."""
    device = next(model.parameters()).device
    inputs = batch_inputs(cfg, seq, batch, device, sep)
    case = {"seq": seq, "batch": batch, "sep": sep, "attention_path": attention_path(model, inputs[2], seq)}
    step = make_step(model, opt, inputs, bf16)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(warmup + steps):
        _sync(device)
        t = time.perf_counter()
        loss = step()
        _sync(device)
        times.append(time.perf_counter() - t)
    step_s = statistics.median(times[warmup:])
    tok_s = seq * batch / step_s
    flops = model_flops_per_token(cfg, seq) * tok_s
    case.update({"first_step_s": times[0], "step_s": step_s, "step_s_all": times[warmup:], "tokens_per_s": tok_s,
                 "model_flops": flops, "mfu": flops / peak if peak else None, "ratio_to_matmul": flops / matmul,
                 "loss": float(loss),
                 "peak_memory_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None})
    return case


def run_model(args: argparse.Namespace) -> dict:
    """``--model``: one config, every (batch, sep) case on one model and optimizer (see the docstring)."""
    from training.setup import peak_flops

    cfg = GLMConfig.from_json_file(args.model)
    if args.dropout is not None:
        cfg.hidden_dropout = cfg.attention_dropout = args.dropout
    if args.activation_checkpointing != "config":
        cfg.checkpoint_activations = args.activation_checkpointing == "on"
    seq = args.seq or cfg.max_sequence_length
    if seq > cfg.max_sequence_length:
        raise UsageError(f"--seq {seq} exceeds the {cfg.max_sequence_length} positions of {args.model}")
    cfg.validate(seq_length=seq)
    device = torch.device(args.device)
    bf16 = args.dtype == "bf16"
    peak = peak_flops(device)
    matmul_n = 8192 if device.type == "cuda" else 2048
    matmul = matmul_flops(matmul_n, device=device, dtype=DTYPES[args.dtype])
    model, opt = build(cfg, device, args.compile)
    out = {
        "torch": torch.__version__, "cuda": torch.version.cuda, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(), "model": args.model, "parameters": num_parameters(model),
        "num_layers": cfg.num_layers, "hidden_size": cfg.hidden_size, "num_attention_heads": cfg.num_attention_heads,
        "vocab_size": cfg.vocab_size, "hidden_dropout": cfg.hidden_dropout, "attention_dropout": cfg.attention_dropout,
        "checkpoint_activations": cfg.checkpoint_activations, "dtype": args.dtype, "compile": args.compile,
        "fused_adamw": bool(opt.defaults["fused"]), "model_flops_per_token": model_flops_per_token(cfg, seq),
        "peak_flops": peak or None, "matmul_flops": matmul, "matmul_n": matmul_n,
        "cases": [],
    }
    for batch, sep in itertools.product(args.batch, args.sep):
        try:
            case = timed_case(model, opt, cfg, seq, batch, sep, bf16, args.warmup, args.steps, peak, matmul)
        except torch.OutOfMemoryError as e:  # record it and go on with the next case
            case = {"seq": seq, "batch": batch, "sep": sep, "error": f"out of memory: {str(e).splitlines()[0]}"}
            opt.zero_grad(set_to_none=True)
            gc.collect()
            torch.cuda.empty_cache()
        out["cases"].append(case)
        mfu = case.get("mfu")
        print(f"[model_step] batch {batch} sep {sep}: " + (case["error"] if "error" in case else
              f"step {case['step_s']:.4f} s, {case['tokens_per_s']:.0f} tokens/s, "
              f"MFU {'n/a' if mfu is None else f'{mfu:.3f}'}, {case['attention_path']}"), file=sys.stderr, flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return out


def run_builtin(args: argparse.Namespace) -> dict:
    """The default: the built-in CPU fp32 cases, one fresh model each."""
    mm = matmul_flops()
    out = {"torch": torch.__version__, "threads": torch.get_num_threads(), "matmul_flops": mm, "cases": {}}
    for name, (kw, seq, batch) in CASES.items():
        if args.only and name != args.only:
            continue
        dropout = 0.1 if args.dropout is None else args.dropout
        cfg = GLMConfig(**kw, hidden_dropout=dropout, attention_dropout=dropout)
        t = step_time(cfg, seq, batch, args.steps)
        tok_s = seq * batch / t
        flops = model_flops_per_token(cfg, seq) * tok_s
        out["cases"][name] = {"seq": seq, "batch": batch, "step_s": t, "tokens_per_s": tok_s,
                              "model_flops": flops, "ratio": flops / mm}
        if args.compile:
            out["cases"][name]["compile"] = compile_ratio(cfg, seq, batch, args.steps)
    out["matmul_flops_after"] = matmul_flops()
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 3; 10 with --model)")
    parser.add_argument("--only", choices=sorted(CASES), default=None, help="one built-in case (no --model)")
    parser.add_argument("--dropout", type=float, default=None,
                        help="hidden and attention dropout (default: 0.1 built-in, the config's with --model)")
    parser.add_argument("--compile", action="store_true", help="the model under torch.compile")
    parser.add_argument("--model", default=None, help="a model config JSON (e.g. config/model/mglm-1b.json)")
    parser.add_argument("--seq", type=int, default=None, help="sequence length (default: the config's)")
    parser.add_argument("--batch", type=int, nargs="+", default=None, help="batch sizes (default 8 16)")
    parser.add_argument("--sep", choices=["same", "random"], nargs="+", default=["same"],
                        help="Part A = seq/2 in every row, or drawn per row (default same)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--activation-checkpointing", choices=["config", "on", "off"], default="config")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per case with --model (default 3)")
    parser.add_argument("--out", default=None, help="also write the JSON here (rewritten after every case)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device cuda: torch {torch.__version__} sees no CUDA device "
                         f"(built for CUDA {torch.version.cuda}); run it on a GPU machine or use --device cpu")
    if args.model is None:
        extra = [f for f, v in (("--seq", args.seq), ("--batch", args.batch), ("--out", args.out)) if v]
        extra += [f for f, bad in (("--device", args.device != "cpu"), ("--dtype", args.dtype != "fp32"),
                                   ("--sep", args.sep != ["same"]),
                                   ("--activation-checkpointing", args.activation_checkpointing != "config"))
                  if bad]
        if extra:
            raise UsageError(f"{', '.join(extra)} need --model CONFIG.json (the built-in small/base cases are "
                             f"fp32 on the CPU at fixed shapes)")
        args.steps = 3 if args.steps is None else args.steps
        out = run_builtin(args)
    else:
        if args.only:
            raise UsageError("--only picks a built-in case; it does not go with --model")
        args.steps = 10 if args.steps is None else args.steps
        args.batch = args.batch or [8, 16]
        for name, value in (("--steps", args.steps), ("--warmup", args.warmup), ("--seq", args.seq or 1),
                            *(("--batch", b) for b in args.batch)):
            if value < 1:
                raise UsageError(f"{name} {value}: expected an integer >= 1")
        out = run_model(args)
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    run_cli(main, "model_step.py")
