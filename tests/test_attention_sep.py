"""Attention from ``sep`` (issue 15 item 3): the prefix-LM split SDPA path equals the dense-mask path
(forward and backward, with and without the KV cache), and the FlexAttention block mask is GLM's mask.
The CUDA kernels are checked under the ``gpu`` marker (skipped without a device)."""

from __future__ import annotations

import pytest
import torch

from model import GLMConfig, GLMModel, glm, glm_lm_loss
from model.glm import KVCache, attention_core
from model.masks import blank_infilling_position_ids, prefix_lm_block_mask, sep_attention_mask, sep_runs

CFG = dict(num_layers=2, vocab_size=512, hidden_size=32, num_attention_heads=4, max_sequence_length=64,
           hidden_dropout=0.0, attention_dropout=0.0)


def _reference(q, k, v, sep):
    """Dense formula written out: GLM's ``scores*m - 65504*(1-m)`` with the mask of ``sep_attention_mask``."""
    m = sep_attention_mask(sep, q.size(2), k.size(2)).float()
    scores = q @ k.transpose(-1, -2) / q.size(-1) ** 0.5
    return torch.softmax(scores * m + (-65504.0) * (1.0 - m), dim=-1) @ v


def _qkv(B, H, L, K, D=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, n, D, generator=g).requires_grad_() for n in (L, K, K)]


def test_sep_runs_groups_equal_neighbours_and_clips() -> None:
    assert sep_runs(torch.tensor([3, 3, 5, 3, 9, -1]), 7) == [(0, 2, 3), (2, 3, 5), (3, 4, 3), (4, 5, 7), (5, 6, 0)]


@pytest.mark.parametrize("sep, L, K", [
    ([3, 5, 5, 0], 7, 7),   # mixed rows, sep = 0 (plain causal)
    ([7, 2], 7, 7),         # sep = L: all bidirectional
    ([2, 0], 5, 9),         # 4 cached keys (offset), as a KV-cache forward of 5 positions
    ([0], 1, 6),            # one decoding step
    ([4], 6, 6),            # one row
])
def test_split_sdpa_equals_dense_forward_and_backward(sep, L, K) -> None:
    sep = torch.tensor(sep)
    B = len(sep)
    q, k, v = _qkv(B, 3, L, K)
    got = attention_core(q, k, v, sep)
    grads = torch.autograd.grad((got * torch.arange(got.numel()).view_as(got).sin()).sum(), (q, k, v))
    ref = _reference(q, k, v, sep)
    ref_grads = torch.autograd.grad((ref * torch.arange(ref.numel()).view_as(ref).sin()).sum(), (q, k, v))
    assert (got - ref).abs().max() <= 1e-6
    for a, b in zip(grads, ref_grads, strict=True):
        assert (a - b).abs().max() <= 1e-6
    dense = attention_core(q, k, v, sep_attention_mask(sep, L, K))  # today's path, same function
    assert (got - dense).abs().max() <= 1e-6


def test_one_sep_value_is_broadcast_to_every_row() -> None:
    q, k, v = _qkv(3, 2, 6, 6)
    assert torch.equal(attention_core(q, k, v, torch.tensor([4])), attention_core(q, k, v, torch.tensor([4, 4, 4])))


def _model_batch(B=3, L=11):
    g = torch.Generator().manual_seed(4)
    ids = torch.randint(0, 512, (B, L), generator=g)
    pos = torch.stack([blank_infilling_position_ids(6, [(5, 1), (3, 2)])] * B)
    sep = torch.tensor([6, 4, 6][:B])
    loss_mask = (torch.arange(L) >= 4).float().expand(B, L)
    return ids, pos, sep, loss_mask


@pytest.fixture(params=["dense", "split"])
def cpu_kernel(request, monkeypatch):
    """Both CPU kernels for ``sep``: the default dense mask and the split SDPA calls (CUDA's fallback)."""
    monkeypatch.setattr(glm, "CPU_SEP_KERNEL", request.param)
    return request.param


@pytest.mark.parametrize("checkpointing", [False, True])
def test_model_sep_equals_dense_mask_forward_and_backward(checkpointing: bool, cpu_kernel: str) -> None:
    ids, pos, sep, loss_mask = _model_batch()
    results = []
    for how in ("sep", "dense", "alias"):
        model = GLMModel(GLMConfig(**CFG, checkpoint_activations=checkpointing), init_seed=9).train()
        if how == "sep":
            logits, _ = model(ids, pos, sep)
        elif how == "dense":
            logits, _ = model(ids, pos, sep_attention_mask(sep, ids.size(1)))
        else:
            logits, _ = model(ids, pos, attention_mask=sep)  # deprecated keyword
        loss = glm_lm_loss(logits, ids.roll(-1, 1), loss_mask)
        loss.backward()
        results.append((logits.detach(), {n: p.grad for n, p in model.named_parameters()}))
    for logits, grads in results[1:]:
        assert (logits - results[0][0]).abs().max() <= 1e-6
        for n, g in grads.items():
            assert (g - results[0][1][n]).abs().max() <= 1e-6, n


def test_model_kv_cache_sep_equals_one_dense_pass(cpu_kernel: str) -> None:
    model = GLMModel(GLMConfig(**CFG), init_seed=2).eval()
    ids, pos, sep, _ = _model_batch()
    L = ids.size(1)
    full, _ = model(ids, pos, sep_attention_mask(sep, L))  # the dense [B, 1, L, L] path
    cache = KVCache(2)
    parts = [model(ids[:, :6], pos[:, :, :6], sep, kv_cache=cache)[0]]  # Part A (sep <= 6: 4 is mixed)
    for i in range(6, L):  # Part B one position at a time: sees everything cached
        parts.append(model(ids[:, i:i + 1], pos[:, :, i:i + 1], torch.zeros(3, dtype=torch.long),
                           kv_cache=cache)[0])
    # Row 1 (sep 4) has Part-B queries 4, 5 inside the first segment: the split handles them there.
    assert (torch.cat(parts, 1) - full).abs().max() <= 1e-5


def test_bad_sep_is_one_clear_error() -> None:
    model = GLMModel(GLMConfig(**CFG)).eval()
    ids, pos, _, _ = _model_batch()
    with pytest.raises(ValueError, match="sep has 2 values for a batch of 3 rows"):
        model(ids, pos, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="not both"):
        model(ids, pos, torch.tensor([1]), attention_mask=torch.tensor([1]))


@pytest.mark.parametrize("offset", [0, 3])
def test_block_mask_is_glms_mask(offset: int) -> None:
    """The ``mask_mod`` of the FlexAttention block mask, evaluated on every (b, q, kv), is
    ``sep_attention_mask``; and eager ``flex_attention`` with it equals the dense formula."""
    flex = pytest.importorskip("torch.nn.attention.flex_attention")
    sep, L = torch.tensor([3, 0, 5]), 5
    bm = prefix_lm_block_mask(sep, offset, L, 3)
    b = torch.arange(3).view(3, 1, 1)
    qi = torch.arange(L).view(1, L, 1)
    kv = torch.arange(offset + L).view(1, 1, -1)
    got = bm.mask_mod(b, torch.zeros_like(b), qi, kv)
    assert torch.equal(got, sep_attention_mask(sep, L, offset + L)[:, 0])
    q, k, v = (t.detach() for t in _qkv(3, 2, L, offset + L))  # flex has no CPU backward
    out = flex.flex_attention(q, k, v, block_mask=bm)
    assert (out - _reference(q, k, v, sep)).abs().max() <= 1e-5


@pytest.mark.gpu
def test_cuda_flex_model_equals_cpu_forward_and_backward() -> None:
    """On CUDA the model builds a FlexAttention block mask (dropout 0, L >= 128); loss and gradients equal
    the CPU's."""
    g = torch.Generator().manual_seed(6)
    L = 200
    ids = torch.randint(0, 512, (3, L), generator=g)
    pos = torch.stack([torch.arange(L).expand(3, L), torch.zeros(3, L, dtype=torch.long)], 1)
    sep, loss_mask = torch.tensor([150, 7, 150]), torch.ones(3, L)
    cfg = GLMConfig(**{**CFG, "hidden_size": 64, "max_sequence_length": L})  # head dim 16: flex's minimum
    assert glm.use_flex_attention(ids.cuda(), 0.0, L, 16)
    out = {}
    for device in ("cpu", "cuda"):
        model = GLMModel(cfg, init_seed=5).to(device).train()
        logits, _ = model(ids.to(device), pos.to(device), sep.to(device))
        loss = glm_lm_loss(logits, ids.roll(-1, 1).to(device), loss_mask.to(device))
        loss.backward()
        out[device] = (float(loss), {n: p.grad.cpu() for n, p in model.named_parameters()})
    assert out["cuda"][0] == pytest.approx(out["cpu"][0], rel=1e-5)
    for n, g in out["cpu"][1].items():
        torch.testing.assert_close(out["cuda"][1][n], g, rtol=1e-3, atol=1e-5, msg=n)


@pytest.mark.gpu
def test_cuda_attention_kernels_equal_dense_long_sequence() -> None:
    """Flex (block mask) and the split SDPA path on CUDA at a length spanning several 128-blocks, with a
    cache offset, equal the dense reference."""
    sep, L, M = torch.tensor([300, 17]), 384, 128
    q, k, v = (t.detach().cuda().requires_grad_() for t in _qkv(2, 4, L, M + L, D=64))
    ref = _reference(q.double(), k.double(), v.double(), sep.cuda()).float()
    flex_out = attention_core(q, k, v, prefix_lm_block_mask(sep.cuda(), M, L, 2))
    split_out = attention_core(q, k, v, sep.cuda())
    torch.testing.assert_close(flex_out, ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(split_out, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("checkpointing", [False, True])
def test_split_path_reads_sep_once_per_forward(checkpointing: bool, monkeypatch) -> None:
    """The split SDPA path (CUDA under attention dropout) reads ``sep`` on the host once per forward and
    backward, not once per layer: on a GPU each read is a device -> host sync (24 per step on mglm-1b)."""
    monkeypatch.setattr(glm, "CPU_SEP_KERNEL", "split")
    reads = []

    def counting_runs(sep, query_len):
        reads.append(query_len)
        return sep_runs(sep, query_len)

    monkeypatch.setattr(glm, "sep_runs", counting_runs)
    ids, pos, sep, loss_mask = _model_batch()
    model = GLMModel(GLMConfig(**{**CFG, "num_layers": 3}, checkpoint_activations=checkpointing), init_seed=9)
    glm_lm_loss(model.train()(ids, pos, sep)[0], ids.roll(-1, 1), loss_mask).backward()
    assert reads == [ids.size(1)]
