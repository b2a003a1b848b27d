"""Cross entropy over vocabulary-parallel logits (reference 3.5).

For logits z [..., V] split as [..., V/p] per rank and a target t:
    loss = log(sum_j exp(z_j - m)) - (z_t - m),   m = max_j z_j
computed with all-reduce(MAX) of the row max and all-reduce(SUM) of the partial exp sums and of the
target logit (owned by exactly one rank). Backward: dloss/dz = softmax(z) - onehot(t), on each rank's slice.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from mpu.utils import vocab_range


class _VocabParallelCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, target: torch.Tensor, state: Any) -> torch.Tensor:
        group = state.tp_group
        multi = state.tp_size > 1
        row_max = logits.max(dim=-1).values  # [...]
        if multi:
            dist.all_reduce(row_max, op=dist.ReduceOp.MAX, group=group)
        shifted = logits - row_max.unsqueeze(-1)  # [..., V/p]
        start, end = vocab_range(logits.size(-1), state.tp_rank)
        outside = (target < start) | (target >= end)
        local_target = (target - start).masked_fill(outside, 0)
        target_logit = shifted.gather(-1, local_target.unsqueeze(-1)).squeeze(-1)  # [...]
        target_logit = target_logit.masked_fill(outside, 0.0)
        exp = shifted.exp_()  # reuse the buffer: it becomes the softmax numerator
        sum_exp = exp.sum(dim=-1)  # [...]
        if multi:
            dist.all_reduce(target_logit, op=dist.ReduceOp.SUM, group=group)
            dist.all_reduce(sum_exp, op=dist.ReduceOp.SUM, group=group)
        loss = sum_exp.log() - target_logit
        softmax = exp.div_(sum_exp.unsqueeze(-1))
        ctx.save_for_backward(softmax, outside, local_target)
        return loss

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        softmax, outside, local_target = ctx.saved_tensors
        grad = softmax.clone()
        inside = (~outside).to(grad.dtype)
        grad.scatter_add_(-1, local_target.unsqueeze(-1), -inside.unsqueeze(-1))
        grad.mul_(grad_output.unsqueeze(-1))
        return grad, None, None


def vocab_parallel_cross_entropy(logits: torch.Tensor, target: torch.Tensor, parallel_state: Any) -> torch.Tensor:
    """Per-token loss [...] from vocab-parallel ``logits`` [..., V/p] and global ``target`` ids [...].

    Use fp32 logits (callers pass ``logits.float()``).
    """
    return _VocabParallelCrossEntropy.apply(logits, target, parallel_state)
