"""Autograd collectives over the tensor-parallel group (GLM ``mpu/mappings.py``).

| function      | forward                                  | backward                                  |
|---------------|------------------------------------------|-------------------------------------------|
| copy_to       | identity                                 | all-reduce(SUM)                           |
| reduce_from   | all-reduce(SUM)                          | identity                                  |
| scatter_to    | keep this rank's slice of the last dim   | all-gather, concatenate on the last dim   |
| gather_from   | all-gather, concatenate on the last dim  | keep this rank's slice                    |

All are identities when the group has one rank.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from mpu.utils import divide


def _all_reduce(x: torch.Tensor, state: Any) -> torch.Tensor:
    if state.tp_size == 1:
        return x
    x = x.contiguous()
    dist.all_reduce(x, op=dist.ReduceOp.SUM, group=state.tp_group)
    return x


def all_gather_last_dim(x: torch.Tensor, state: Any) -> torch.Tensor:
    """Concatenate every rank's ``x`` [..., n] along the last dim -> [..., p*n]."""
    p = state.tp_size
    if p == 1:
        return x
    x = x.contiguous()
    gather_single = getattr(dist, "all_gather_single", None) or getattr(dist, "all_gather_into_tensor", None)
    if gather_single is not None:
        # Flat buffers: backends differ in which multi-dim output shapes they accept.
        out = torch.empty(p * x.numel(), dtype=x.dtype, device=x.device)
        gather_single(out, x.view(-1), group=state.tp_group)
        return torch.cat(out.view((p,) + tuple(x.shape)).unbind(0), dim=-1)  # [p, ..., n] -> [..., p*n]
    parts = [torch.empty_like(x) for _ in range(p)]
    dist.all_gather(parts, x, group=state.tp_group)
    return torch.cat(parts, dim=-1)


def _own_slice_last_dim(x: torch.Tensor, state: Any) -> torch.Tensor:
    if state.tp_size == 1:
        return x
    n = divide(x.size(-1), state.tp_size)
    return x[..., state.tp_rank * n:(state.tp_rank + 1) * n].contiguous()


class _CopyToParallelRegion(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, state):
        ctx.state = state
        return x

    @staticmethod
    def backward(ctx, grad):
        return _all_reduce(grad.clone() if ctx.state.tp_size > 1 else grad, ctx.state), None


class _ReduceFromParallelRegion(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, state):
        return _all_reduce(x.clone(), state)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class _ScatterToParallelRegion(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, state):
        ctx.state = state
        return _own_slice_last_dim(x, state)

    @staticmethod
    def backward(ctx, grad):
        return all_gather_last_dim(grad, ctx.state), None


class _GatherFromParallelRegion(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, state):
        ctx.state = state
        return all_gather_last_dim(x, state)

    @staticmethod
    def backward(ctx, grad):
        return _own_slice_last_dim(grad, ctx.state), None


def copy_to_tensor_parallel_region(x: torch.Tensor, state: Any) -> torch.Tensor:
    """Identity forward; all-reduce of the gradient over the TP group in backward."""
    return x if state.tp_size == 1 else _CopyToParallelRegion.apply(x, state)


def reduce_from_tensor_parallel_region(x: torch.Tensor, state: Any) -> torch.Tensor:
    """All-reduce(SUM) over the TP group forward; identity backward."""
    return x if state.tp_size == 1 else _ReduceFromParallelRegion.apply(x, state)


def scatter_to_tensor_parallel_region(x: torch.Tensor, state: Any) -> torch.Tensor:
    """Keep this rank's chunk of the last dim forward; all-gather the gradient backward."""
    return x if state.tp_size == 1 else _ScatterToParallelRegion.apply(x, state)


def gather_from_tensor_parallel_region(x: torch.Tensor, state: Any) -> torch.Tensor:
    """All-gather along the last dim forward; keep this rank's chunk of the gradient backward."""
    return x if state.tp_size == 1 else _GatherFromParallelRegion.apply(x, state)
