"""Gradient-norm clipping that counts tensor-parallel shards once (GLM ``mpu/grads.py``)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

if TYPE_CHECKING:
    from mpu.initialize import ParallelState


def clip_grad_norm(parameters: Iterable[torch.Tensor], max_norm: float, parallel_state: ParallelState,
                   norm_type: float = 2.0) -> float:
    """Scale gradients in place so the global norm is at most ``max_norm``; return the global norm.

    norm^q = sum over sharded params (``model_parallel=True``) on every TP rank + replicated params on TP
    rank 0 only, all-reduced (SUM) over the TP group; the inf-norm uses MAX. Clip coefficient
    ``max_norm / (norm + 1e-6)`` applied when below 1.
    """
    params = [p for p in parameters if p.grad is not None]
    state = parallel_state
    if not params:
        return 0.0
    device = params[0].grad.device
    counted = [p for p in params if getattr(p, "model_parallel", False) or state.tp_rank == 0]
    if norm_type == math.inf:
        total = torch.zeros((), dtype=torch.float32, device=device)
        for p in params:
            total = torch.maximum(total, p.grad.detach().abs().max().float())
        if state.tp_size > 1:
            dist.all_reduce(total, op=dist.ReduceOp.MAX, group=state.tp_group)
        total_norm = float(total)
    else:
        total = torch.zeros((), dtype=torch.float32, device=device)
        for p in counted:
            total += p.grad.detach().float().norm(norm_type) ** norm_type
        if state.tp_size > 1:
            dist.all_reduce(total, op=dist.ReduceOp.SUM, group=state.tp_group)
        total_norm = float(total) ** (1.0 / norm_type)
    coef = max_norm / (total_norm + 1e-6)
    if coef < 1.0:
        for p in params:
            p.grad.detach().mul_(coef)
    return total_norm
