"""``--compile`` (issue 15 item 5): the model under torch.compile computes the eager model's loss and
gradients, and compiling in place keeps the checkpoint keys."""

from __future__ import annotations

import shutil

import pytest
import torch

from model import GLMConfig, GLMModel, glm_lm_loss, param_groups_for_weight_decay
from model.masks import blank_infilling_position_ids
from training.arguments import TrainArgs

CFG = dict(num_layers=2, vocab_size=256, hidden_size=32, num_attention_heads=4, max_sequence_length=32,
           hidden_dropout=0.0, attention_dropout=0.0)


def test_compile_in_place_keeps_state_dict_keys_and_flag_exists() -> None:
    eager = GLMModel(GLMConfig(**CFG), init_seed=3)
    compiled = GLMModel(GLMConfig(**CFG), init_seed=3)
    compiled.compile()  # what pretrain_glm.py / finetune_glm.py do for --compile (compiles lazily)
    assert list(compiled.state_dict()) == list(eager.state_dict())  # no "_orig_mod." prefix
    assert TrainArgs().compile is False and TrainArgs(compile=True).compile is True


def _eager_and_compiled_steps(rank: int, world: int) -> list:
    """Two AdamW steps of the same model eager and compiled: [(losses, step-1 gradients)] for each. Runs in a
    spawned process (``run_distributed``): inductor's compile workers and threads never live in the pytest
    process, whose later tests fork DataLoader workers (a fork of a process with them running can crash)."""
    g = torch.Generator().manual_seed(0)
    B, L = 2, 11
    ids = torch.randint(0, 256, (B, L), generator=g)
    pos = torch.stack([blank_infilling_position_ids(6, [(5, 1), (3, 2)])] * B)
    sep, loss_mask = torch.tensor([6, 4]), (torch.arange(L) >= 4).float().expand(B, L)
    out = []
    for compile in (False, True):
        model = GLMModel(GLMConfig(**CFG), init_seed=3).train()
        if compile:
            model.compile()
        opt = torch.optim.AdamW(param_groups_for_weight_decay(model, 0.01), lr=1e-2)
        losses = []
        for _ in range(2):  # step 1: loss and gradients; step 2: the loss after one AdamW update
            loss = glm_lm_loss(model(ids, pos, sep, logit_mask=loss_mask != 0)[0], ids, loss_mask)
            opt.zero_grad()
            loss.backward()
            if not losses:
                grads = {n: p.grad.clone() for n, p in model.named_parameters()}
            opt.step()
            losses.append(float(loss.detach()))
        out.append((losses, grads))
    return out


@pytest.mark.slow  # the first compiled step compiles forward and backward: ~30 s on a 2-core CPU
@pytest.mark.skipif(shutil.which("g++") is None and not torch.cuda.is_available(),
                    reason="torch.compile (inductor) needs a C++ compiler on the CPU")
def test_compiled_training_step_equals_eager() -> None:
    from distributed import run_distributed

    ((eager_losses, eager_grads), (comp_losses, comp_grads)), = run_distributed(_eager_and_compiled_steps, 1,
                                                                                timeout=600)
    assert eager_losses[1] < eager_losses[0] - 1e-3  # the update changed the loss: step 2 tests something
    assert comp_losses == pytest.approx(eager_losses, abs=1e-5)
    for n, g in eager_grads.items():
        torch.testing.assert_close(comp_grads[n], g, rtol=1e-4, atol=1e-6, msg=n)
