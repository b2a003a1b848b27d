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

from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

from mpu.utils import divide

if TYPE_CHECKING:
    from mpu.initialize import ParallelState


def _all_reduce(x: torch.Tensor, parallel_state: ParallelState) -> torch.Tensor:
    if parallel_state.tp_size == 1:
        return x
    x = x.contiguous()
    dist.all_reduce(x, op=dist.ReduceOp.SUM, group=parallel_state.tp_group)
    return x


def all_gather_last_dim(x: torch.Tensor, parallel_state: ParallelState) -> torch.Tensor:
    """Concatenate every rank's ``x`` [..., n] along the last dim -> [..., p*n]."""
    p = parallel_state.tp_size
    if p == 1:
        return x
    x = x.contiguous()
    gather_single = getattr(dist, "all_gather_single", None) or getattr(dist, "all_gather_into_tensor", None)
    if gather_single is not None:
        # Flat buffers: backends differ in which multi-dim output shapes they accept.
        out = torch.empty(p * x.numel(), dtype=x.dtype, device=x.device)
        gather_single(out, x.view(-1), group=parallel_state.tp_group)
        return torch.cat(out.view((p,) + tuple(x.shape)).unbind(0), dim=-1)  # [p, ..., n] -> [..., p*n]
    parts = [torch.empty_like(x) for _ in range(p)]
    dist.all_gather(parts, x, group=parallel_state.tp_group)
    return torch.cat(parts, dim=-1)


def _own_slice_last_dim(x: torch.Tensor, parallel_state: ParallelState) -> torch.Tensor:
    if parallel_state.tp_size == 1:
        return x
    n = divide(x.size(-1), parallel_state.tp_size)
    return x[..., parallel_state.tp_rank * n:(parallel_state.tp_rank + 1) * n].contiguous()


class _CopyToParallelRegion(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, parallel_state):
        ctx.parallel_state = parallel_state
        return x

    @staticmethod
    def backward(ctx, grad):
        return _all_reduce(grad.clone() if ctx.parallel_state.tp_size > 1 else grad, ctx.parallel_state), None


class _ReduceFromParallelRegion(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, parallel_state):
        return _all_reduce(x.clone(), parallel_state)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class _ScatterToParallelRegion(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, parallel_state):
        ctx.parallel_state = parallel_state
        return _own_slice_last_dim(x, parallel_state)

    @staticmethod
    def backward(ctx, grad):
        return all_gather_last_dim(grad, ctx.parallel_state), None


class _GatherFromParallelRegion(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, parallel_state):
        ctx.parallel_state = parallel_state
        return all_gather_last_dim(x, parallel_state)

    @staticmethod
    def backward(ctx, grad):
        return _own_slice_last_dim(grad, ctx.parallel_state), None


def copy_to_tensor_parallel_region(x: torch.Tensor, parallel_state: ParallelState) -> torch.Tensor:
    """Identity forward; all-reduce of the gradient over the TP group in backward."""
    return x if parallel_state.tp_size == 1 else _CopyToParallelRegion.apply(x, parallel_state)


def reduce_from_tensor_parallel_region(x: torch.Tensor, parallel_state: ParallelState) -> torch.Tensor:
    """All-reduce(SUM) over the TP group forward; identity backward."""
    return x if parallel_state.tp_size == 1 else _ReduceFromParallelRegion.apply(x, parallel_state)


def scatter_to_tensor_parallel_region(x: torch.Tensor, parallel_state: ParallelState) -> torch.Tensor:
    """Keep this rank's chunk of the last dim forward; all-gather the gradient backward."""
    return x if parallel_state.tp_size == 1 else _ScatterToParallelRegion.apply(x, parallel_state)


def gather_from_tensor_parallel_region(x: torch.Tensor, parallel_state: ParallelState) -> torch.Tensor:
    """All-gather along the last dim forward; keep this rank's chunk of the gradient backward."""
    return x if parallel_state.tp_size == 1 else _GatherFromParallelRegion.apply(x, parallel_state)
