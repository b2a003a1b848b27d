"""mpu primitives vs a dense single-process computation, forward and backward, at TP 1, 2 and 4."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mpu import ColumnParallelLinear, ParallelState, RowParallelLinear, VocabParallelEmbedding
from mpu.cross_entropy import vocab_parallel_cross_entropy, vocab_parallel_smoothed_cross_entropy
from mpu.mappings import (
    copy_to_tensor_parallel_region,
    gather_from_tensor_parallel_region,
    reduce_from_tensor_parallel_region,
    scatter_to_tensor_parallel_region,
)
from mpu.random import RNGStatesTracker, checkpoint, model_parallel_seed
from mpu.utils import divide, strided_merge, strided_slice
from tests.distributed import run_distributed

TOL = 1e-5


def _err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach() - b.detach()).abs().max())


def _parity_checks(state: ParallelState) -> dict[str, float]:
    """Max abs errors of every parallel primitive against its dense equivalent (on this rank)."""
    p, r = state.tp_size, state.tp_rank
    errs: dict[str, float] = {}
    single = ParallelState.single()
    data = torch.Generator().manual_seed(7)
    B, L, h, out, V = 2, 3, 8, 16, 32

    # ColumnParallelLinear, gather_output=True, stride 1.
    dense = ColumnParallelLinear(h, out, single, generator=torch.Generator().manual_seed(1))
    par = ColumnParallelLinear(h, out, state, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        dense.bias.normal_(generator=data)
        par.bias.copy_(dense.bias.chunk(p)[r])
    errs["col_init"] = _err(par.weight, dense.weight.chunk(p, 0)[r])
    x = torch.randn(B, L, h, generator=data)
    gy = torch.randn(B, L, out, generator=data)
    xd, xp = x.clone().requires_grad_(), x.clone().requires_grad_()
    yd, yp = dense(xd), par(xp)
    (yd * gy).sum().backward()
    (yp * gy).sum().backward()
    errs["col_fwd"] = _err(yp, yd)
    errs["col_dx"] = _err(xp.grad, xd.grad)
    errs["col_dw"] = _err(par.weight.grad, dense.weight.grad.chunk(p, 0)[r])
    errs["col_db"] = _err(par.bias.grad, dense.bias.grad.chunk(p)[r])

    # ColumnParallelLinear stride 3 (fused QKV), local output: rank r holds [Q_r; K_r; V_r].
    dense = ColumnParallelLinear(h, 3 * 8, single, generator=torch.Generator().manual_seed(2), stride=3)
    par = ColumnParallelLinear(h, 3 * 8, state, gather_output=False, generator=torch.Generator().manual_seed(2),
                               stride=3)
    q, k, v = dense.weight.chunk(3, 0)
    expected = torch.cat([q.chunk(p, 0)[r], k.chunk(p, 0)[r], v.chunk(p, 0)[r]], 0)
    errs["qkv_init"] = _err(par.weight, expected)
    gy = torch.randn(B, L, 24, generator=data)
    xd, xp = x.clone().requires_grad_(), x.clone().requires_grad_()
    yd, yp = dense(xd), par(xp)
    (yd * gy).sum().backward()
    (yp * strided_slice(gy, -1, p, r, 3)).sum().backward()
    errs["qkv_fwd"] = _err(yp, strided_slice(yd, -1, p, r, 3))
    errs["qkv_dx"] = _err(xp.grad, xd.grad)
    errs["qkv_dw"] = _err(par.weight.grad, strided_slice(dense.weight.grad, 0, p, r, 3))

    # RowParallelLinear, input not parallel (scatter inside).
    dense = RowParallelLinear(out, h, single, generator=torch.Generator().manual_seed(3))
    par = RowParallelLinear(out, h, state, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        dense.bias.normal_(generator=data)
        par.bias.copy_(dense.bias)
    errs["row_init"] = _err(par.weight, dense.weight.chunk(p, 1)[r])
    x = torch.randn(B, L, out, generator=data)
    gy = torch.randn(B, L, h, generator=data)
    xd, xp = x.clone().requires_grad_(), x.clone().requires_grad_()
    yd, yp = dense(xd), par(xp)
    (yd * gy).sum().backward()
    (yp * gy).sum().backward()
    errs["row_fwd"] = _err(yp, yd)
    errs["row_dx"] = _err(xp.grad, xd.grad)
    errs["row_dw"] = _err(par.weight.grad, dense.weight.grad.chunk(p, 1)[r])
    errs["row_db"] = _err(par.bias.grad, dense.bias.grad)
    assert par.weight.model_parallel and not par.bias.model_parallel
    assert (par.weight.partition_dim, par.weight.partition_stride, par.bias.partition_dim) == (1, 1, -1)

    # VocabParallelEmbedding.
    dense = VocabParallelEmbedding(V, h, single, generator=torch.Generator().manual_seed(4))
    par = VocabParallelEmbedding(V, h, state, generator=torch.Generator().manual_seed(4))
    errs["emb_init"] = _err(par.weight, dense.weight.chunk(p, 0)[r])
    ids = torch.randint(0, V, (B, L), generator=data)
    gy = torch.randn(B, L, h, generator=data)
    yd, yp = dense(ids), par(ids)
    (yd * gy).sum().backward()
    (yp * gy).sum().backward()
    errs["emb_fwd"] = _err(yp, yd)
    errs["emb_dw"] = _err(par.weight.grad, dense.weight.grad.chunk(p, 0)[r])

    # Vocab-parallel cross entropy vs F.cross_entropy.
    logits = torch.randn(B, L, V, generator=data) * 3
    target = torch.randint(0, V, (B, L), generator=data)
    g = torch.rand(B, L, generator=data)
    ld = logits.clone().requires_grad_()
    lp = logits.chunk(p, -1)[r].clone().requires_grad_()
    loss_d = F.cross_entropy(ld.view(-1, V), target.view(-1), reduction="none").view(B, L)
    loss_p = vocab_parallel_cross_entropy(lp, target, state)
    (loss_d * g).sum().backward()
    (loss_p * g).sum().backward()
    errs["ce_fwd"] = _err(loss_p, loss_d)
    errs["ce_grad"] = _err(lp.grad, ld.grad.chunk(p, -1)[r])

    # Label-smoothed: torch's label_smoothing is the same definition (mean over all V classes).
    ld = logits.clone().requires_grad_()
    lp = logits.chunk(p, -1)[r].clone().requires_grad_()
    loss_d = F.cross_entropy(ld.view(-1, V), target.view(-1), reduction="none", label_smoothing=0.1).view(B, L)
    loss_p = vocab_parallel_smoothed_cross_entropy(lp, target, 0.1, state)
    (loss_d * g).sum().backward()
    (loss_p * g).sum().backward()
    errs["ce_smooth_fwd"] = _err(loss_p, loss_d)
    errs["ce_smooth_grad"] = _err(lp.grad, ld.grad.chunk(p, -1)[r])

    # The four mappings: forward and backward against their definitions.
    full = torch.randn(B, 4 * p, generator=data)  # identical on every rank
    mine = full.chunk(p, -1)[r].clone().requires_grad_()
    gathered = gather_from_tensor_parallel_region(mine, state)
    gathered.backward(full * 2)
    errs["gather_fwd"] = _err(gathered, full)
    errs["gather_bwd"] = _err(mine.grad, (full * 2).chunk(p, -1)[r])
    whole = full.clone().requires_grad_()
    scattered = scatter_to_tensor_parallel_region(whole, state)
    scattered.backward(torch.ones_like(scattered) * (r + 1))
    expected_grad = torch.cat([torch.ones(B, 4) * (i + 1) for i in range(p)], -1)
    errs["scatter_fwd"] = _err(scattered, full.chunk(p, -1)[r])
    errs["scatter_bwd"] = _err(whole.grad, expected_grad)
    xr = (full * (r + 1)).requires_grad_()
    reduced = reduce_from_tensor_parallel_region(xr, state)
    reduced.backward(torch.ones_like(full))
    errs["reduce_fwd"] = _err(reduced, full * sum(range(1, p + 1)))
    errs["reduce_bwd"] = _err(xr.grad, torch.ones_like(full))
    xc = full.clone().requires_grad_()
    copied = copy_to_tensor_parallel_region(xc, state)
    copied.backward(torch.ones_like(full) * (r + 1))
    errs["copy_fwd"] = _err(copied, full)
    errs["copy_bwd"] = _err(xc.grad, torch.ones_like(full) * sum(range(1, p + 1)))
    return errs


def _mpu_worker(rank: int, world: int) -> dict:
    state = ParallelState.from_torch_distributed(world)
    assert (state.tp_size, state.tp_rank, state.dp_size, state.tp_src_rank) == (world, rank, 1, 0)
    result = {"errs": _parity_checks(state)}

    # clip_grad_norm: sharded params once per shard, replicated ones once in total.
    from mpu.grads import clip_grad_norm

    sharded = torch.nn.Parameter(torch.zeros(3))
    sharded.model_parallel = True
    sharded.grad = torch.full((3,), float(rank + 1))
    repl = torch.nn.Parameter(torch.zeros(2))
    repl.model_parallel = False
    repl.grad = torch.full((2,), 2.0)
    norm = clip_grad_norm([sharded, repl], max_norm=1.0, parallel_state=state)
    result["norm"] = norm
    result["expected_norm"] = math.sqrt(sum(3 * (i + 1) ** 2 for i in range(world)) + 2 * 4.0)
    result["clipped_norm_sq_local"] = float(sharded.grad.norm() ** 2)

    # RNG: default stream shared across TP ranks, tracker stream different per rank.
    model_parallel_seed(123, state)
    shared = torch.rand(4)
    with state.rng_tracker.fork():
        forked = torch.rand(4)
    result["shared"], result["forked"] = shared, forked
    return result


@pytest.mark.parametrize("tp", [1])
def test_parallel_layers_tp1(tp: int) -> None:
    errs = _parity_checks(ParallelState.single())
    bad = {k: v for k, v in errs.items() if v > TOL}
    assert not bad, bad


@pytest.mark.slow
@pytest.mark.parametrize("tp", [2, 4])
def test_parallel_layers_match_dense(tp: int) -> None:
    results = run_distributed(_mpu_worker, tp)
    for rank, res in enumerate(results):
        bad = {k: v for k, v in res["errs"].items() if v > TOL}
        assert not bad, f"rank {rank}: {bad}"
        assert res["norm"] == pytest.approx(res["expected_norm"], rel=1e-6)
    # After clipping to 1.0 the global norm is 1: sum of squared local shards + replicated part.
    clipped_total = sum(r["clipped_norm_sq_local"] for r in results) + 8.0 / results[0]["expected_norm"] ** 2
    assert clipped_total == pytest.approx(1.0, rel=1e-4)
    for r in results[1:]:
        assert torch.equal(r["shared"], results[0]["shared"])
        assert not torch.equal(r["forked"], results[0]["forked"])


def test_strided_slice_merge_roundtrip() -> None:
    master = torch.arange(24 * 2).view(24, 2)
    for p in (1, 2, 4):
        shards = [strided_slice(master, 0, p, r, 3) for r in range(p)]
        assert torch.equal(strided_merge(shards, 0, 3), master)
    # Rank 1 of 2 holds rows [Q_1; K_1; V_1] = rows 4..7, 12..15, 20..23.
    expected = torch.cat([master[4:8], master[12:16], master[20:24]])
    assert torch.equal(strided_slice(master, 0, 2, 1, 3), expected)
    with pytest.raises(ValueError):
        divide(10, 4)


def test_tracker_fork_and_checkpoint_restore_rng() -> None:
    state = ParallelState.single()
    model_parallel_seed(5, state)
    tracker = state.rng_tracker
    with tracker.fork():
        a = torch.rand(3)
    with tracker.fork():
        b = torch.rand(3)
    assert not torch.equal(a, b)  # the forked stream advances
    fresh = RNGStatesTracker()
    fresh.add("model-parallel-rng", 5 + 2718)
    with fresh.fork():
        assert torch.equal(torch.rand(3), a)  # seed + 2718 + tp_rank

    w = torch.randn(6, 6, requires_grad=True)

    def body(x: torch.Tensor) -> torch.Tensor:
        y = F.dropout(x @ w, 0.5, training=True)  # default stream
        with tracker.fork():
            y = F.dropout(y, 0.5, training=True)  # tracker stream
        return y

    x = torch.randn(4, 6)
    snap_default, snap_tracker = torch.get_rng_state(), tracker.get_states()
    ref = body(x)
    ref.sum().backward()
    g_ref = w.grad.clone()
    w.grad = None
    torch.set_rng_state(snap_default)
    tracker.set_states(snap_tracker)
    out = checkpoint(body, x, rng_tracker=tracker)
    out.sum().backward()
    assert torch.equal(out, ref)
    assert torch.allclose(w.grad, g_ref, atol=1e-6)
