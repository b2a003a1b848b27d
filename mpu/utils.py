"""Small helpers shared by the tensor-parallel primitives."""

from __future__ import annotations

import torch


def ensure_divisibility(numerator: int, denominator: int) -> None:
    """Assert that ``numerator`` is divisible by ``denominator``."""
    if denominator <= 0 or numerator % denominator != 0:
        raise ValueError(f"{numerator} is not divisible by {denominator}")


def divide(numerator: int, denominator: int) -> int:
    """Exact integer division; raises ValueError when it is not exact."""
    ensure_divisibility(numerator, denominator)
    return numerator // denominator


def vocab_range(per_partition_vocab_size: int, rank: int) -> tuple[int, int]:
    """Half-open range ``[rank*per, (rank+1)*per)`` of vocabulary ids owned by ``rank``."""
    start = rank * per_partition_vocab_size
    return start, start + per_partition_vocab_size


def strided_slice(master: torch.Tensor, dim: int, world_size: int, rank: int, stride: int = 1) -> torch.Tensor:
    """This rank's slice of ``master`` along ``dim`` with Megatron's strided layout.

    ``master`` is cut into ``stride*world_size`` equal chunks along ``dim``; rank r keeps chunks
    ``r, r+world, r+2*world, ...`` concatenated. With ``stride=3`` on a stacked [Q; K; V] weight this
    gives rank r the rows ``[Q_r; K_r; V_r]`` (GLM's ``mpu/transformer.py``).
    """
    chunks = torch.chunk(master, stride * world_size, dim=dim)
    assert len(chunks) == stride * world_size, "dimension not divisible by stride*world_size"
    return torch.cat(chunks[rank::world_size], dim=dim)


def strided_merge(shards: list[torch.Tensor], dim: int, stride: int = 1) -> torch.Tensor:
    """Inverse of :func:`strided_slice`: rebuild the master tensor from every rank's slice."""
    world_size = len(shards)
    per_rank = [torch.chunk(s, stride, dim=dim) for s in shards]
    ordered = [per_rank[r][k] for k in range(stride) for r in range(world_size)]
    return torch.cat(ordered, dim=dim)
