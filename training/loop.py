"""The training loop shared by pretraining and finetuning.

The loop owns cadence, not content: the entry script passes a ``loss_fn(engine, batch) -> (loss, tag)``
(``tag`` names the objective, e.g. ``bert``/``sentence``/``gpt``, so losses are also reported per
objective), an iterator factory ``train_batches(start_step)`` that yields the micro-batches of step
``start_step`` onwards, and optional evaluation. Per step it runs ``grad_accum`` micro-batches, one
optimizer update, and then, on their intervals, a log line + scalars, validation, and a checkpoint.

SIGTERM/SIGINT (cluster preemption, Ctrl-C) set a flag; at the end of the current step every rank agrees
on it (one all-reduce) and the run saves a checkpoint and returns, so ``--load`` continues exactly there.
"""

from __future__ import annotations

import math
import signal
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from common.progress import report_progress
from data_utils.blank_infilling import MODES
from training.logging import MetricsWriter, format_line, get_logger

if TYPE_CHECKING:
    from mpu.initialize import ParallelState


@dataclass
class LoopConfig:
    train_iters: int
    grad_accum: int = 1
    log_interval: int = 50
    eval_interval: int = 1000
    save_interval: int = 5000
    exit_signal_save: bool = True
    tokens_per_sample: int = 0  # for tokens/s when a batch has no "text" field
    flops_per_token: float = 0.0  # model FLOPs per token, forward + backward, for MFU
    peak_flops: float = 0.0  # per process; 0 disables MFU
    progress: bool = True
    objectives: tuple[str, ...] = MODES  # the tags loss_fn may return


@dataclass
class LoopState:
    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)  # one entry per logged interval
    step_losses: list[float] = field(default_factory=list)  # every step's DP-mean loss (for resume tests)
    last_eval: dict[str, float] = field(default_factory=dict)
    stopped_by_signal: bool = False


class _SignalFlag:
    """Records SIGTERM/SIGINT instead of dying mid-step; restores the old handlers on exit."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.hit = False
        self._old: dict[int, Any] = {}

    def __enter__(self):
        if self.enabled:
            for s in (signal.SIGTERM, signal.SIGINT):
                try:
                    self._old[s] = signal.signal(s, self._handler)
                except ValueError:  # not the main thread (e.g. inside some test runners)
                    pass
        return self

    def _handler(self, signum, frame):
        self.hit = True

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)


def train(
    engine,
    parallel_state: ParallelState,
    cfg: LoopConfig,
    state: LoopState,
    lr_at: Callable[[int], float],
    loss_fn: Callable[[Any, dict], tuple[torch.Tensor, str]],
    train_batches: Callable[[int], Iterator[dict]],
    save_fn: Callable[[int], None] | None = None,
    eval_fn: Callable[[int], dict[str, float]] | None = None,
    writer: MetricsWriter | None = None,
    rank: int = 0,
) -> LoopState:
    """Run from ``state.step`` to ``cfg.train_iters``. Collective: every rank calls it."""
    log = get_logger(rank)
    writer = writer or MetricsWriter(None)
    batches = train_batches(state.step)
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    norms: list[float] = []
    scale = None
    skipped = 0
    t_interval = time.perf_counter()
    steps_in_interval = 0
    tokens_in_interval = 0
    # A bar on a terminal; in a log file (nohup, a cluster's job log) a plain line every 30 s
    # (MGLM_PROGRESS_SECONDS) when no log line came in between, so the steps before the first
    # --log-interval line are not silent and frequent log lines get no extra ones.
    bar = report_progress(total=cfg.train_iters, initial=state.step, desc="train", unit="step",
                          enabled=cfg.progress and rank == 0, mininterval=1.0, leave=False)
    engine.train()
    with _SignalFlag(cfg.exit_signal_save) as flag:
        while state.step < cfg.train_iters:
            lr = lr_at(state.step)
            # Per objective: [sum of micro-batch losses, count], summed over data-parallel ranks, so that
            # each objective's loss is averaged over the micro-batches that actually trained it.
            per_tag = torch.zeros(len(cfg.objectives), 2, dtype=torch.float64)
            tokens = 0
            for _ in range(cfg.grad_accum):
                batch = next(batches)
                tokens += batch["text"].numel() if "text" in batch else cfg.tokens_per_sample
                loss, tag = loss_fn(engine, batch)
                engine.backward(loss)
                result = engine.step(lr)
                if tag not in cfg.objectives:
                    raise ValueError(f"loss_fn returned objective {tag!r}; expected one of {cfg.objectives}")
                per_tag[cfg.objectives.index(tag)] += torch.tensor([float(loss.detach()), 1.0], dtype=torch.float64)
            assert result.boundary, "the last micro-batch of a step must close the accumulation window"
            state.step += 1
            steps_in_interval += 1
            tokens_in_interval += tokens * parallel_state.dp_size  # every DP rank processes a micro-batch of this size
            if parallel_state.dp_size > 1:
                dist.all_reduce(per_tag, group=parallel_state.dp_group)
            step_loss = float(per_tag[:, 0].sum() / per_tag[:, 1].sum())
            state.step_losses.append(step_loss)
            sums["loss"] += step_loss
            counts["loss"] += 1
            for i, name in enumerate(cfg.objectives):
                if per_tag[i, 1] > 0 and len(cfg.objectives) > 1:
                    sums[f"loss_{name}"] += float(per_tag[i, 0])
                    counts[f"loss_{name}"] += int(per_tag[i, 1])
            if result.grad_norm is not None:
                norms.append(result.grad_norm)
            scale = result.loss_scale
            skipped += 0 if result.applied else 1
            bar.set_postfix(loss=f"{step_loss:.4f}", refresh=False)  # first: a line that update writes shows it
            bar.update(1)

            if state.step % cfg.log_interval == 0 or state.step == cfg.train_iters:
                elapsed = time.perf_counter() - t_interval
                ms = 1000.0 * elapsed / steps_in_interval
                tokens_s = tokens_in_interval / max(elapsed, 1e-9)  # padded tokens through the model
                values: dict[str, float | None] = {k: sums[k] / counts[k] for k in sorted(sums) if counts[k]}
                values.update({
                    "lr": lr,
                    "grad_norm": sum(norms) / len(norms) if norms else None,
                    "loss_scale": scale,
                    "tokens_per_s": tokens_s,
                    "ms_per_step": ms,
                    "skipped": float(skipped) if skipped else None,
                })
                if cfg.peak_flops > 0 and cfg.flops_per_token > 0:
                    world = parallel_state.dp_size * parallel_state.tp_size
                    values["mfu"] = tokens_s * cfg.flops_per_token / (cfg.peak_flops * world)
                bar.clear()
                log.info(format_line(state.step, cfg.train_iters, values))
                writer.scalars("train", values, state.step)
                state.history.append({"step": state.step, **{k: v for k, v in values.items() if v is not None}})
                sums.clear(), counts.clear(), norms.clear()
                skipped = 0
                steps_in_interval = 0
                tokens_in_interval = 0
                t_interval = time.perf_counter()

            if eval_fn is not None and (state.step % cfg.eval_interval == 0 or state.step == cfg.train_iters):
                state.last_eval = eval_fn(state.step)
                engine.train()
                writer.scalars("valid", state.last_eval, state.step)
                bar.clear()
                log.info(format_line(state.step, cfg.train_iters, {f"valid_{k}": v for k, v in state.last_eval.items()}))

            stop = _agree(flag.hit)
            if save_fn is not None and (state.step % cfg.save_interval == 0 or state.step == cfg.train_iters or stop):
                save_fn(state.step)
            if stop:
                log.warning(f"stopping at step {state.step} on SIGTERM/SIGINT (checkpoint saved: {save_fn is not None})")
                state.stopped_by_signal = True
                break
    bar.close()
    return state


def _agree(local: bool) -> bool:
    """True on every rank when any rank saw the signal (a rank that stops alone would hang the others)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return local
    t = torch.tensor([1.0 if local else 0.0])
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def perplexity(loss: float) -> float:
    return math.exp(min(20.0, loss))
