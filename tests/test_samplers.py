"""Distributed batch sampler (pure in (seed, step), endless, resumable, rank slices) and the loader."""

from __future__ import annotations

import numpy as np
import pytest

from data_utils.samplers import DistributedBatchSampler, build_pretrain_loader, permute


@pytest.mark.parametrize("n", [1, 2, 3, 10, 1000, 4097])
def test_permute_is_a_bijection(n):
    p = permute(np.arange(n), n, seed=3, epoch=1)
    assert sorted(p.tolist()) == list(range(n))
    if n >= 10:
        assert not np.array_equal(p, np.arange(n))
        assert not np.array_equal(p, permute(np.arange(n), n, seed=3, epoch=2))


def test_rank_slices_are_disjoint_parts_of_one_global_batch():
    world, gb = 4, 16
    samplers = [DistributedBatchSampler(1000, gb, r, world, seed=5) for r in range(world)]
    for step in (0, 1, 17, 300):
        parts = [s.batch(step) for s in samplers]
        assert all(len(p) == gb // world for p in parts) and all(st == step for p in parts for st, _ in p)
        union = [i for p in parts for _, i in p]
        assert union == samplers[0].global_batch(step).tolist()
        assert len(set(union)) == gb
        lo = 2 * gb // world  # rank 2 holds [2B/W, 3B/W)
        assert [i for _, i in parts[2]] == union[lo : lo + gb // world]


def test_endless_epochs_resume_and_determinism():
    n, gb = 10, 4
    s = DistributedBatchSampler(n, gb, seed=1)
    it = iter(s)
    stream = [i for _ in range(20) for _, i in next(it)]  # 8 epochs
    for e in range(8):
        assert sorted(stream[e * n : (e + 1) * n]) == list(range(n))  # each epoch is a permutation
    assert stream[:n] != stream[n : 2 * n]  # a new order per epoch
    resumed = iter(DistributedBatchSampler(n, gb, seed=1, start_step=7))
    assert [i for _, i in next(resumed)] == stream[28:32]
    assert [i for _, i in DistributedBatchSampler(n, gb, seed=2).batch(0)] != stream[:4]
    with pytest.raises(ValueError):
        DistributedBatchSampler(n, 6, rank=0, world_size=4)


class ToyDataset:
    """Pure function of the index (like BlockDataset)."""

    def __len__(self):
        return 500

    def __getitem__(self, idx):
        rng = np.random.default_rng([11, idx])
        n = int(rng.integers(20, 60))
        text = np.concatenate([[102], rng.integers(7, 100, size=n - 2), [100]])
        text[rng.random(n) < 0.1] = 5
        text[0], text[-1] = 102, 100
        return {"text": text, "loss_mask": (text != 102).astype(np.int64)}


def toy_collator():
    from data_utils.blank_infilling import BlankInfillingCollator, BlankInfillingConfig

    return BlankInfillingCollator(BlankInfillingConfig(), cls_id=102, eos_id=100, mask_id=103, smask_id=108,
                                  gmask_id=109, sop_id=106, eop_id=107, sentence_end=_ends)


def _ends(tokens):
    return tokens == 5


def take(loader, k):
    it = iter(loader)
    return [next(it) for _ in range(k)]


def test_same_batches_on_0_1_2_workers_and_resume():
    kw = dict(global_batch_size=8, dp_rank=1, dp_world_size=2, seed=42)
    ref = take(build_pretrain_loader(ToyDataset(), toy_collator(), num_workers=0, **kw), 5)
    assert [b["step"] for b in ref] == [0, 1, 2, 3, 4]
    for w in (1, 2):
        got = take(build_pretrain_loader(ToyDataset(), toy_collator(), num_workers=w, **kw), 5)
        for a, b in zip(ref, got, strict=True):
            assert a["mode"] == b["mode"]
            for k in ("text", "target", "loss_mask", "position_id", "sep"):
                assert a[k].equal(b[k]), (w, k)
    resumed = take(build_pretrain_loader(ToyDataset(), toy_collator(), num_workers=0, start_step=3, **kw), 2)
    for a, b in zip(ref[3:], resumed, strict=True):
        assert a["text"].equal(b["text"]) and a["step"] == b["step"]
    other_rank = take(build_pretrain_loader(ToyDataset(), toy_collator(), num_workers=0,
                                            **{**kw, "dp_rank": 0}), 5)
    assert any(not a["text"].equal(b["text"]) if a["text"].shape == b["text"].shape else True
               for a, b in zip(ref, other_rank, strict=True))
