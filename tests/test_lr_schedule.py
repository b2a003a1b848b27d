"""LR schedule against values worked out by hand from GLM's AnnealingLR formulas."""

import pytest
import torch

from training.lr_schedule import LRSchedule


def test_warmup_then_linear_clamped():
    s = LRSchedule(lr=1e-4, decay_iters=100, warmup=0.1, decay_style="linear", decay_ratio=0.1)  # W = 10
    assert s(0) == 0.0
    assert s(5) == pytest.approx(5e-5)  # 1e-4 * 5/10
    assert s(10) == pytest.approx(1e-4)
    assert s(55) == pytest.approx(5.5e-5)  # r = 45/90 = 0.5 -> 1e-4 * (1 - 0.9*0.5)
    assert s(100) == pytest.approx(1e-5)  # r = 1 -> decay_ratio * lr
    assert s(500) == pytest.approx(1e-5)  # clamped as in Multilingual-GLM (GLM would go negative)


def test_cosine():
    s = LRSchedule(lr=1e-4, decay_iters=100, warmup=0.1, decay_style="cosine", decay_ratio=0.1)
    assert s(40) == pytest.approx(7.75e-5)  # r = 1/3, cos(pi/3) = .5 -> 0.1 + 0.9 * 0.75
    assert s(55) == pytest.approx(5.5e-5)  # r = 1/2, cos = 0 -> 0.1 + 0.9 * 0.5
    assert s(100) == pytest.approx(1e-5) and s(1000) == pytest.approx(1e-5)


def test_constant_and_no_warmup():
    assert LRSchedule(lr=3e-5, decay_iters=10, warmup=0.0, decay_style="constant")(7) == 3e-5
    s = LRSchedule(lr=2.0, decay_iters=4, warmup=0.0, decay_ratio=0.0)
    assert [s(t) for t in range(6)] == [2.0, 1.5, 1.0, 0.5, 0.0, 0.0]


def test_engine_step_sets_the_scheduled_rate_on_every_group():
    from mpu import ParallelState
    from training.engine import TorchEngine

    layer = torch.nn.Linear(2, 1)
    engine = TorchEngine(layer, [{"params": [layer.weight]}, {"params": [layer.bias], "weight_decay": 0.0}],
                         ParallelState.single(), lr=1.0)
    s = LRSchedule(lr=1e-3, decay_iters=10, warmup=0.5)  # W = 5: step 1 -> 1e-3 * 1/5
    engine.backward(layer(torch.ones(1, 2)).sum())
    engine.step(s(1))
    assert [g["lr"] for g in engine.optimizer.param_groups] == pytest.approx([2e-4, 2e-4])


@pytest.mark.parametrize("kw, msg", [
    ({"decay_style": "exp"}, "lr-decay-style"),
    ({"warmup": 1.5}, "--warmup 1.5"),
    ({"decay_iters": 0}, "decay steps 0"),
])
def test_bad_values(kw, msg):
    args = {"lr": 1e-4, "decay_iters": 10, **kw}
    with pytest.raises(ValueError, match=msg):
        LRSchedule(**args)
