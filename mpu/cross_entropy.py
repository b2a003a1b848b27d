"""Cross entropy over vocabulary-parallel logits (GLM ``mpu/cross_entropy.py``).

For logits z [..., V] split as [..., V/p] per rank and a target t:
    loss = log(sum_j exp(z_j - m)) - (z_t - m),   m = max_j z_j
computed with all-reduce(MAX) of the row max and all-reduce(SUM) of the partial exp sums and of the
target logit (owned by exactly one rank). Backward: dloss/dz = softmax(z) - onehot(t), on each rank's slice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

from mpu.utils import vocab_range

if TYPE_CHECKING:
    from mpu.initialize import ParallelState


class _VocabParallelCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, target: torch.Tensor, parallel_state: ParallelState) -> torch.Tensor:
        group = parallel_state.tp_group
        multi = parallel_state.tp_size > 1
        v_local = logits.size(-1)
        flat = logits.reshape(-1, v_local)  # [N, V/p]
        # torch.softmax is one vectorised pass (a separate exp over the logits is several times slower on CPU).
        softmax = torch.softmax(flat, dim=-1)  # [N, V/p], local normalisation
        row_max, argmax = flat.max(dim=-1)  # [N]
        # Local log-sum-exp from the softmax at the row max: p_max = exp(max - lse) >= 1/V, no underflow.
        lse = row_max - softmax.gather(-1, argmax[:, None]).squeeze(-1).log()  # [N]
        if multi:
            # Global lse = M + log sum_r exp(lse_r - M), M = max_r lse_r; rescale the local softmax to it.
            global_max = lse.clone()
            dist.all_reduce(global_max, op=dist.ReduceOp.MAX, group=group)
            sum_exp = (lse - global_max).exp()
            dist.all_reduce(sum_exp, op=dist.ReduceOp.SUM, group=group)
            global_lse = global_max + sum_exp.log()
            softmax.mul_((lse - global_lse).exp()[:, None])
            lse = global_lse
        start, end = vocab_range(v_local, parallel_state.tp_rank)
        t = target.reshape(-1)  # [N]
        outside = (t < start) | (t >= end)
        local_target = (t - start).masked_fill(outside, 0)
        target_logit = flat.gather(-1, local_target[:, None]).squeeze(-1).masked_fill(outside, 0.0)  # [N]
        if multi:
            dist.all_reduce(target_logit, op=dist.ReduceOp.SUM, group=group)
        ctx.logits_shape = logits.shape
        ctx.save_for_backward(softmax, outside, local_target)
        return (lse - target_logit).view(target.shape)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output: torch.Tensor):
        softmax, outside, local_target = ctx.saved_tensors
        # In place on the saved softmax (no logits-sized copy); the graph is freed after one backward.
        grad = softmax
        minus_inside = (~outside).to(grad.dtype).neg_()  # -1 where this rank owns the target
        grad.scatter_add_(-1, local_target[:, None], minus_inside[:, None])
        grad.mul_(grad_output.reshape(-1, 1))
        return grad.view(ctx.logits_shape), None, None


def vocab_parallel_cross_entropy(logits: torch.Tensor, target: torch.Tensor, parallel_state: ParallelState) -> torch.Tensor:
    """Per-token loss [...] from vocab-parallel ``logits`` [..., V/p] and global ``target`` ids [...].

    Use fp32 logits (callers pass ``logits.float()``).
    """
    return _VocabParallelCrossEntropy.apply(logits, target, parallel_state)


def vocab_parallel_smoothed_cross_entropy(logits: torch.Tensor, target: torch.Tensor, epsilon: float,
                                          parallel_state: ParallelState) -> torch.Tensor:
    """Label-smoothed per-token loss [...] (GLM's ``--label-smoothing``, as ``torch.nn.functional.cross_entropy``
    with ``label_smoothing``):

        loss = (1 - eps) * CE(z, t) + eps * mean_v(-log softmax(z)_v),   mean_v(-log p_v) = lse(z) - mean_v(z_v)

    over the whole (padded) vocabulary V. Under TP, lse uses the all-reduced row max (a constant shift)
    and all-reduced exp sums, and mean_v(z) the all-reduced row sums; both reductions are identity in
    backward, so each rank's slice gets its own gradient.
    """
    from mpu.mappings import reduce_from_tensor_parallel_region

    ce = vocab_parallel_cross_entropy(logits, target, parallel_state)
    if epsilon == 0.0:
        return ce
    with torch.no_grad():
        m = logits.max(dim=-1, keepdim=True).values  # [..., 1]
        if parallel_state.tp_size > 1:
            dist.all_reduce(m, op=dist.ReduceOp.MAX, group=parallel_state.tp_group)
    sum_exp = reduce_from_tensor_parallel_region((logits - m).exp().sum(-1), parallel_state)  # [...]
    lse = m.squeeze(-1) + sum_exp.log()
    vocab = logits.size(-1) * parallel_state.tp_size
    mean_z = reduce_from_tensor_parallel_region(logits.sum(-1), parallel_state) / vocab
    return (1.0 - epsilon) * ce + epsilon * (lse - mean_z)
