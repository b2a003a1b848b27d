"""Logits only where they are scored: ``GLMModel(..., logit_mask=...)`` gives the same loss and gradients as
the full [B, L, V] logits, at TP=1 and TP=2 (vocab-parallel cross entropy), and rejects a wrong mask."""

from __future__ import annotations

import pytest
import torch

from model import GLMConfig, GLMModel, glm_lm_loss
from model.masks import blank_infilling_position_ids
from mpu import ParallelState
from tests.distributed import run_distributed

CFG = dict(num_layers=2, vocab_size=384, hidden_size=32, num_attention_heads=4, max_sequence_length=32,
           hidden_dropout=0.0, attention_dropout=0.0)


def _batch():
    """Two rows of a blank-infilling layout: Part A of 6 / 4 tokens, weighted loss on part of Part B."""
    g = torch.Generator().manual_seed(3)
    B, L = 2, 11
    ids = torch.randint(0, CFG["vocab_size"], (B, L), generator=g)
    target = torch.randint(0, CFG["vocab_size"], (B, L), generator=g)
    pos = torch.stack([blank_infilling_position_ids(6, [(5, 1), (3, 2)])] * B)
    sep = torch.tensor([6, 4])
    loss_mask = torch.zeros(B, L)
    loss_mask[0, 6:] = 1.0
    loss_mask[1, [4, 7, 9]] = torch.tensor([1.0, 0.5, 2.0])  # weights other than 0/1 are kept
    return ids, target, pos, sep, loss_mask


def _loss_and_grads(model: GLMModel, scored_only: bool, state: ParallelState | None = None):
    ids, target, pos, sep, loss_mask = _batch()
    model.zero_grad(set_to_none=True)
    if scored_only:
        logits, _ = model(ids, pos, sep, logit_mask=loss_mask != 0)
        assert logits.shape == (int((loss_mask != 0).sum()), model.word_embeddings.weight.size(0))
    else:
        logits, _ = model(ids, pos, sep)
    loss = glm_lm_loss(logits, target, loss_mask, state)
    loss.backward()
    return loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters()}


def _dense_reference():
    """The loss by hand from the full logits: sum_i w_i CE_i / sum_i w_i."""
    ids, target, pos, sep, loss_mask = _batch()
    model = GLMModel(GLMConfig(**CFG), init_seed=11)
    with torch.no_grad():
        logits, _ = model(ids, pos, sep)
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), target.reshape(-1),
                                           reduction="none")
    return float((ce * loss_mask.reshape(-1)).sum() / loss_mask.sum())


def test_scored_logits_same_loss_and_grads_tp1() -> None:
    model = GLMModel(GLMConfig(**CFG), init_seed=11)
    full_loss, full_grads = _loss_and_grads(model, scored_only=False)
    loss, grads = _loss_and_grads(model, scored_only=True)
    assert float(loss) == pytest.approx(_dense_reference(), rel=1e-6)
    assert float(loss) == pytest.approx(float(full_loss), rel=1e-6)
    for k, g in full_grads.items():
        assert g.abs().max() > 0, k  # every parameter really gets a gradient
        assert torch.allclose(grads[k], g, rtol=1e-5, atol=1e-8), k
    # The embedding rows of words that are neither input nor target still get the softmax gradient.
    assert grads["word_embeddings.weight"].abs().sum(-1).gt(0).all()


def test_logit_mask_selects_rows_and_checks_shapes() -> None:
    model = GLMModel(GLMConfig(**CFG), init_seed=11).eval()
    ids, target, pos, sep, loss_mask = _batch()
    with torch.no_grad():
        full, _ = model(ids, pos, sep)
        at = torch.zeros_like(ids, dtype=torch.bool)
        at[:, -1] = True
        last, _ = model(ids, pos, sep, logit_mask=at)
        none, _ = model(ids, pos, sep, logit_mask=torch.zeros_like(at))
    assert torch.allclose(last, full[:, -1], atol=1e-6)
    assert none.shape == (0, CFG["vocab_size"])
    with pytest.raises(ValueError, match=r"logit_mask has shape \(2, 10\)"):
        model(ids, pos, sep, logit_mask=at[:, 1:])
    with pytest.raises(ValueError, match="logits have 2 rows but loss_mask has 8 nonzero"):
        glm_lm_loss(full[:, -1], target, loss_mask)


def _tp_worker(rank: int, world: int) -> dict:
    from model.checkpoint_compat import load_glm_state_dict, shard_state_dict

    state = ParallelState.from_torch_distributed(world)
    model = GLMModel(GLMConfig(**CFG), state, init_seed=5)
    load_glm_state_dict(model, shard_state_dict(GLMModel(GLMConfig(**CFG), init_seed=11).state_dict(), world, rank))
    full_loss, full_grads = _loss_and_grads(model, False, state)
    loss, grads = _loss_and_grads(model, True, state)
    return {"full_loss": float(full_loss), "loss": float(loss), "full_grads": full_grads, "grads": grads}


@pytest.mark.slow
def test_scored_logits_same_loss_and_grads_tp2() -> None:
    from model.checkpoint_compat import merge_state_dicts

    results = run_distributed(_tp_worker, 2)
    model = GLMModel(GLMConfig(**CFG), init_seed=11)
    ref_loss, ref_grads = _loss_and_grads(model, scored_only=False)
    for r in results:
        assert r["loss"] == pytest.approx(r["full_loss"], rel=1e-6)
        assert r["loss"] == pytest.approx(float(ref_loss), rel=1e-5)
        for k, g in r["full_grads"].items():
            assert torch.allclose(r["grads"][k], g, rtol=1e-5, atol=1e-8), k
    merged = merge_state_dicts([r["grads"] for r in results])
    for k, g in ref_grads.items():
        assert torch.allclose(merged[k], g, rtol=1e-4, atol=1e-7), k
