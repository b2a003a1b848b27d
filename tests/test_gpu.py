"""The same model code on a CUDA device: numbers equal the CPU's, bf16 autocast stays close to
fp32, decoding with the KV cache equals decoding without it. Marked ``gpu``: skipped without CUDA
(tests/conftest.py), run on the GPU machines (``pytest -m gpu``)."""

from __future__ import annotations

import pytest
import torch

from model import GLMConfig, GLMModel, glm_lm_loss
from model.generation import GenerationConfig, SpecialTokens, generate
from model.masks import blank_infilling_position_ids

pytestmark = pytest.mark.gpu

CFG = dict(num_layers=2, vocab_size=512, hidden_size=64, num_attention_heads=4, max_sequence_length=64,
           hidden_dropout=0.0, attention_dropout=0.0)


def _batch(B: int = 2, L: int = 11, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 500, (B, L), generator=g)
    pos = torch.stack([blank_infilling_position_ids(6, [(5, 1), (3, 2)])] * B)  # [B, 2, L]
    sep = torch.tensor([6, 4][:B])
    loss_mask = (torch.arange(L) >= 6).float().expand(B, L)
    return ids, pos, sep, loss_mask


def _loss_and_grads(model: GLMModel, device: str, autocast_bf16: bool = False):
    ids, pos, sep, loss_mask = (t.to(device) for t in _batch())
    model = model.to(device)
    model.zero_grad()
    with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=autocast_bf16):
        logits, _ = model(ids, pos, sep)
    loss = glm_lm_loss(logits, ids.roll(-1, dims=1), loss_mask)
    loss.backward()
    grads = {n: p.grad.detach().float().cpu() for n, p in model.named_parameters()}
    return float(loss), grads


def test_cuda_forward_backward_equals_cpu():
    cpu_loss, cpu_grads = _loss_and_grads(GLMModel(GLMConfig(**CFG), init_seed=3), "cpu")
    gpu_loss, gpu_grads = _loss_and_grads(GLMModel(GLMConfig(**CFG), init_seed=3), "cuda")
    assert gpu_loss == pytest.approx(cpu_loss, rel=1e-4)
    for name, g in cpu_grads.items():
        torch.testing.assert_close(gpu_grads[name], g, rtol=1e-3, atol=1e-5, msg=name)


def test_bf16_autocast_close_to_fp32():
    fp32, _ = _loss_and_grads(GLMModel(GLMConfig(**CFG), init_seed=3), "cuda")
    bf16, grads = _loss_and_grads(GLMModel(GLMConfig(**CFG), init_seed=3), "cuda", autocast_bf16=True)
    assert bf16 == pytest.approx(fp32, rel=2e-2)
    assert all(torch.isfinite(g).all() for g in grads.values())


def test_cuda_cached_decoding_equals_uncached():
    model = GLMModel(GLMConfig(**{**CFG, "vocab_size": 256}), init_seed=7).eval().to("cuda")
    special = SpecialTokens(sop_id=246, end_ids=(247,), mask_ids=(248, 249), pad_id=0, vocab_limit=250)
    g = torch.Generator().manual_seed(2)
    ctx = torch.randint(1, 240, (12,), generator=g).tolist()
    ctx[6] = 248
    for kw in (dict(), dict(num_beams=3, num_return_sequences=2)):
        a = generate(model, special, ctx, GenerationConfig(max_new_tokens=8, use_cache=True, **kw))
        b = generate(model, special, ctx, GenerationConfig(max_new_tokens=8, use_cache=False, **kw))
        assert [r.tokens for r in a] == [r.tokens for r in b]


def test_torch_engine_fused_adamw_on_cuda_equals_cpu_loop():
    """TorchEngine on CUDA parameters uses the fused AdamW kernel; three steps of it land where torch's
    default CPU loop does."""
    from mpu.initialize import ParallelState
    from training.engine import TorchEngine

    weights = {}
    for device in ("cpu", "cuda"):
        model = GLMModel(GLMConfig(**CFG), init_seed=3).to(device)
        engine = TorchEngine(model, [{"params": list(model.parameters()), "weight_decay": 0.01}],
                             ParallelState.single(), lr=1e-3, device=torch.device(device))
        assert engine.optimizer.defaults["fused"] is (True if device == "cuda" else None)
        ids, pos, sep, loss_mask = (t.to(device) for t in _batch())
        for _ in range(3):
            engine.backward(glm_lm_loss(engine(ids, pos, sep)[0], ids.roll(-1, dims=1), loss_mask))
            engine.step(1e-3)
        weights[device] = {n: p.detach().cpu() for n, p in model.named_parameters()}
    for name, w in weights["cpu"].items():
        torch.testing.assert_close(weights["cuda"][name], w, rtol=1e-4, atol=1e-5, msg=name)
