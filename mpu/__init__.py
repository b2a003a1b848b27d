"""Megatron-style tensor parallelism: process groups, collectives, parallel layers (no model code)."""

from mpu.cross_entropy import vocab_parallel_cross_entropy
from mpu.initialize import ParallelState
from mpu.layers import (
    ColumnParallelLinear,
    RowParallelLinear,
    VocabParallelEmbedding,
    normal_init,
    scaled_normal_init,
)
from mpu.random import RNGStatesTracker, checkpoint, model_parallel_seed

__all__ = [
    "ColumnParallelLinear", "ParallelState", "RNGStatesTracker", "RowParallelLinear", "VocabParallelEmbedding",
    "checkpoint", "model_parallel_seed", "normal_init", "scaled_normal_init", "vocab_parallel_cross_entropy",
]
