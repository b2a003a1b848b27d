"""Learning-rate schedule of GLM's ``AnnealingLR``, as a pure function of the optimizer step.

With ``W = warmup * decay_iters`` warm-up steps, ``E = decay_iters - W`` decay steps, start rate ``lr``,
final ratio ``d`` (the last rate is ``d * lr``) and ``r = clamp((t - W) / E, 0, 1)``:

    warm-up (t <= W, W > 0):  lr * t / W
    linear:                   lr * (1 - (1 - d) * r)
    cosine:                   lr * (d + (1 - d) * (1 + cos(pi * r)) / 2)
    constant:                 lr

``r`` is clamped at 1 as in Multilingual-GLM (upstream GLM lets a linear rate keep falling, even below
zero, after ``decay_iters``). Being a pure function of ``t`` it needs no state in checkpoints: resuming
at step ``t`` gives the same rate as the uninterrupted run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DECAY_STYLES = ("linear", "cosine", "constant")


@dataclass(frozen=True)
class LRSchedule:
    lr: float
    decay_iters: int
    warmup: float = 0.01  # fraction of decay_iters
    decay_style: str = "linear"
    decay_ratio: float = 0.1

    def __post_init__(self):
        if self.decay_style not in DECAY_STYLES:
            raise ValueError(f"--lr-decay-style {self.decay_style!r}: expected one of {', '.join(DECAY_STYLES)}")
        if not 0.0 <= self.warmup <= 1.0:
            raise ValueError(f"--warmup {self.warmup}: expected a fraction of the decay steps in [0, 1]")
        if self.decay_iters < 1:
            raise ValueError(f"lr decay steps {self.decay_iters}: expected >= 1")
        if not 0.0 <= self.decay_ratio <= 1.0:
            raise ValueError(f"--lr-decay-ratio {self.decay_ratio}: expected a value in [0, 1]")

    @property
    def warmup_iters(self) -> int:
        return int(self.warmup * self.decay_iters)

    def __call__(self, step: int) -> float:
        """Learning rate for optimizer step ``step`` (0-based count of steps already taken)."""
        w = self.warmup_iters
        if w > 0 and step <= w:
            return self.lr * step / w
        if self.decay_style == "constant":
            return self.lr
        end = max(self.decay_iters - w, 1)
        r = min(max((step - w) / end, 0.0), 1.0)
        d = self.decay_ratio
        if self.decay_style == "linear":
            return self.lr * (1.0 - (1.0 - d) * r)
        return self.lr * (d + (1.0 - d) * (1.0 + math.cos(math.pi * r)) / 2.0)
