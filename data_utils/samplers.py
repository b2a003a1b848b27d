"""Distributed, resumable, never-ending batch sampling and the pretraining DataLoader.

Global batch ``step`` holds dataset positions ``g = step * B + j`` (j < B, B = global batch size). Epoch
``g // N`` visits the dataset (N samples) in the order of a seeded pseudo-random permutation (a Feistel
network with cycle walking, keyed by (seed, epoch): O(1) memory for any N), so the stream is a pure function
of (seed, step) and can start at any step. Data-parallel rank r of W takes ``j in [r*B/W, (r+1)*B/W)``.

Each element the sampler yields is ``(step, index)``; ``build_pretrain_loader`` wraps the dataset to accept
it and seeds the collator with ``(seed, step, dp_rank)``, so a batch does not depend on which DataLoader
worker built it, nor on how many workers there are.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

_M64 = (1 << 64) - 1


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer on uint64 arrays (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def permute(positions: np.ndarray, n: int, seed: int, epoch: int, rounds: int = 4) -> np.ndarray:
    """A seeded bijection of ``[0, n)`` evaluated at ``positions`` (int64 array), keyed by (seed, epoch)."""
    positions = np.asarray(positions, dtype=np.uint64)
    if n <= 1:
        return positions.astype(np.int64)
    bits = max(2, (n - 1).bit_length())
    bits += bits & 1  # even number of bits: two equal halves
    half = bits // 2
    low = np.uint64((1 << half) - 1)
    keys = [np.uint64(((seed * 0x9E3779B97F4A7C15) ^ (epoch * 0xC2B2AE3D27D4EB4F) ^ (r * 0x165667B19E3779F9)) & _M64)
            for r in range(rounds)]

    def feistel(x: np.ndarray) -> np.ndarray:
        left, right = x >> np.uint64(half), x & low
        for k in keys:
            left, right = right, left ^ (_mix(right ^ k) & low)
        return (left << np.uint64(half)) | right

    with np.errstate(over="ignore"):
        out = feistel(positions)
        todo = out >= np.uint64(n)
        while todo.any():  # cycle walking: re-encrypt until the value lands in [0, n)
            out[todo] = feistel(out[todo])
            todo = out >= np.uint64(n)
    return out.astype(np.int64)


class DistributedBatchSampler:
    """Endless per-rank slices of seeded global batches; a pure function of (seed, step).

    Yields lists of ``(step, dataset_index)`` of length ``global_batch_size // world_size``.
    """

    def __init__(self, num_samples: int, global_batch_size: int, rank: int = 0, world_size: int = 1,
                 seed: int = 1234, start_step: int = 0, shuffle: bool = True):
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        if global_batch_size < 1 or global_batch_size % world_size:
            raise ValueError(f"global batch size {global_batch_size} must be a positive multiple of "
                             f"the data-parallel size {world_size}")
        if start_step < 0:
            raise ValueError(f"start_step must be >= 0, got {start_step}")
        self.num_samples, self.global_batch_size = int(num_samples), global_batch_size
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.start_step, self.shuffle = start_step, shuffle
        self.micro_batch_size = global_batch_size // world_size

    def global_batch(self, step: int) -> np.ndarray:
        """Dataset indices of the whole global batch at ``step`` (int64 [B])."""
        g = step * self.global_batch_size + np.arange(self.global_batch_size, dtype=np.int64)
        epoch, within = g // self.num_samples, g % self.num_samples
        if not self.shuffle:
            return within
        out = np.empty_like(within)
        for e in np.unique(epoch):  # a batch spans at most a few epochs
            sel = epoch == e
            out[sel] = permute(within[sel], self.num_samples, self.seed, int(e))
        return out

    def batch(self, step: int) -> list[tuple[int, int]]:
        lo = self.rank * self.micro_batch_size
        idx = self.global_batch(step)[lo : lo + self.micro_batch_size]
        return [(step, int(i)) for i in idx]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        while True:
            yield self.batch(step)
            step += 1


class StepIndexedDataset:
    """Dataset wrapper taking ``(step, index)`` keys and returning ``(step, dataset[index])``."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __getitem__(self, key: tuple[int, int]):
        step, index = key
        return step, self.dataset[index]

    def __len__(self) -> int:
        return len(self.dataset)


class SeededCollate:
    """collate_fn: seeds the blank-infilling collator with (seed, step, dp_rank), never with worker state."""

    def __init__(self, collator, seed: int, dp_rank: int):
        self.collator, self.seed, self.dp_rank = collator, seed, dp_rank

    def rng(self, step: int) -> np.random.Generator:
        # The trailing constant separates this stream from the dataset's (seed, index) streams.
        return np.random.default_rng([self.seed, step, self.dp_rank, 0xC011A7E])

    def __call__(self, items: list[tuple[int, dict]]) -> dict:
        steps = {s for s, _ in items}
        assert len(steps) == 1, f"a batch mixes steps {sorted(steps)}"
        step = steps.pop()
        batch = self.collator([x for _, x in items], self.rng(step))
        batch["step"] = step
        return batch


def build_pretrain_loader(dataset, collator, *, global_batch_size: int, dp_rank: int = 0, dp_world_size: int = 1,
                          seed: int = 1234, start_step: int = 0, num_workers: int = 0, pin_memory: bool = False,
                          prefetch_factor: int | None = None, multiprocessing_context: str | None = None):
    """An endless torch DataLoader of blank-infilling batches for one data-parallel rank.

    Batch ``k`` it yields is the one for step ``start_step + k``; it is identical for any ``num_workers``.
    The batch dict carries ``"step"`` (int) besides the model fields.
    """
    from torch.utils.data import DataLoader

    sampler = DistributedBatchSampler(len(dataset), global_batch_size, dp_rank, dp_world_size, seed, start_step)
    kwargs = {}
    if num_workers > 0:
        kwargs["persistent_workers"] = False
        if prefetch_factor is not None:
            kwargs["prefetch_factor"] = prefetch_factor
        if multiprocessing_context is not None:
            kwargs["multiprocessing_context"] = multiprocessing_context
    import torch

    # A private generator: creating a DataLoader iterator otherwise draws its worker base seed from the
    # global torch RNG, which shifts the dropout stream and breaks exact resume.
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(StepIndexedDataset(dataset), batch_sampler=sampler, num_workers=num_workers,
                      collate_fn=SeededCollate(collator, seed, dp_rank), pin_memory=pin_memory, generator=gen,
                      **kwargs)
