"""Tensor-parallel / data-parallel process groups, built explicitly (no module globals).

Layout as Megatron v1: tensor-parallel (TP) groups are blocks of adjacent global ranks
``range(i*tp, (i+1)*tp)`` (put them on one node), data-parallel (DP) groups are ``range(i, world, tp)``.
A ``ParallelState`` is passed to every parallel layer and collective; ``ParallelState.single()`` describes
one process, for which every collective is a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mpu.random import RNGStatesTracker


@dataclass
class ParallelState:
    """Ranks and process groups of this process.

    Also implements the ``mpu=`` interface DeepSpeed expects (``get_model_parallel_*``,
    ``get_data_parallel_*`` and the ``get_tensor_model_parallel_*`` aliases).
    """

    tp_size: int = 1
    tp_rank: int = 0
    tp_group: Any = None
    dp_size: int = 1
    dp_rank: int = 0
    dp_group: Any = None
    tp_src_rank: int = 0
    rng_tracker: RNGStatesTracker = field(default_factory=RNGStatesTracker)

    @classmethod
    def single(cls) -> ParallelState:
        """State of a lone process: TP = DP = 1, no groups, collectives are no-ops."""
        return cls()

    @classmethod
    def from_torch_distributed(cls, tensor_parallel_size: int) -> ParallelState:
        """Build the TP and DP groups from an initialised ``torch.distributed`` world.

        Every rank calls ``new_group`` for every group in the same order (required by torch).
        """
        import torch.distributed as dist

        if not dist.is_available() or not dist.is_initialized():
            raise ValueError("torch.distributed is not initialised; call init_process_group first "
                             "or use ParallelState.single()")
        world = dist.get_world_size()
        rank = dist.get_rank()
        tp = int(tensor_parallel_size)
        if tp < 1 or world % tp != 0:
            raise ValueError(f"tensor_parallel_size={tp} must be >= 1 and divide the world size {world}")
        dp = world // tp
        tp_group = dp_group = None
        for i in range(dp):
            ranks = list(range(i * tp, (i + 1) * tp))
            g = dist.new_group(ranks)
            if rank in ranks:
                tp_group = g
        for i in range(tp):
            ranks = list(range(i, world, tp))
            g = dist.new_group(ranks)
            if rank in ranks:
                dp_group = g
        return cls(tp_size=tp, tp_rank=rank % tp, tp_group=tp_group, dp_size=dp, dp_rank=rank // tp,
                   dp_group=dp_group, tp_src_rank=(rank // tp) * tp)

    def __deepcopy__(self, memo: dict) -> ParallelState:
        # A handle on process groups: copies of a model share it.
        return self

    # DeepSpeed ``mpu`` interface ------------------------------------------------------------------
    def get_model_parallel_rank(self) -> int:
        return self.tp_rank

    def get_model_parallel_world_size(self) -> int:
        return self.tp_size

    def get_model_parallel_group(self) -> Any:
        return self.tp_group

    def get_data_parallel_rank(self) -> int:
        return self.dp_rank

    def get_data_parallel_world_size(self) -> int:
        return self.dp_size

    def get_data_parallel_group(self) -> Any:
        return self.dp_group

    def get_model_parallel_src_rank(self) -> int:
        return self.tp_src_rank

    get_tensor_model_parallel_rank = get_model_parallel_rank
    get_tensor_model_parallel_world_size = get_model_parallel_world_size
    get_tensor_model_parallel_group = get_model_parallel_group
    get_tensor_model_parallel_src_rank = get_model_parallel_src_rank
