"""Tensor-parallel layers (GLM ``mpu/layers.py``).

Initialisation is independent of the TP size: the full ("master") weight is drawn on CPU from the given
seeded ``torch.Generator`` and each rank keeps its slice, so a TP model's shards are slices of the TP=1 model.
Every parameter a layer here creates carries its sharding rule (Megatron-Core's tags): ``model_parallel``
(True: each TP rank holds a slice; False: a full replica, counted once by ``clip_grad_norm``),
``partition_dim`` (the dimension it is split along, -1 when replicated) and ``partition_stride`` (Megatron's
strided layout, see ``mpu.utils.strided_slice``). Resharding and strict loading read the rule back with
:func:`partition_of`; no other code re-derives it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mpu.initialize import ParallelState
from mpu.mappings import (
    copy_to_tensor_parallel_region,
    gather_from_tensor_parallel_region,
    reduce_from_tensor_parallel_region,
    scatter_to_tensor_parallel_region,
)
from mpu.utils import divide, strided_slice, vocab_range

InitMethod = Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]


def normal_init(std: float) -> InitMethod:
    """Init method drawing N(0, std) from the given generator (in place)."""

    def init(tensor: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return tensor.normal_(0.0, std, generator=generator)

    return init


def scaled_normal_init(std: float, num_layers: int) -> InitMethod:
    """N(0, std / sqrt(2 * num_layers)) for residual output projections."""
    return normal_init(std / math.sqrt(2.0 * num_layers))


def set_partition(param: torch.Tensor, dim: int | None, stride: int = 1) -> None:
    """Tag ``param`` with its sharding rule: split along ``dim`` with ``stride``, or replicated (``dim`` None)."""
    param.model_parallel = dim is not None
    param.partition_dim = -1 if dim is None else dim
    param.partition_stride = stride


def partition_of(param: torch.Tensor) -> tuple[int, int] | None:
    """(dim, stride) along which ``param`` is split across TP ranks, or None when it is replicated.

    Parameters created outside this module (LayerNorm, position tables) carry only ``model_parallel = False``
    or nothing: replicated. A sharded parameter without a dimension is a bug in the layer that made it."""
    if not getattr(param, "model_parallel", False):
        return None
    dim = getattr(param, "partition_dim", -1)
    if dim < 0:
        raise ValueError(f"parameter of shape {tuple(param.shape)} is tagged model_parallel but has no partition_dim")
    return dim, getattr(param, "partition_stride", 1)


def _init_sharded(weight: torch.Tensor, full_shape: tuple[int, ...], partition_dim: int, state: ParallelState,
                  init_method: InitMethod, generator: torch.Generator | None, stride: int = 1) -> None:
    """Draw the master weight (fp32, CPU) and copy this rank's strided slice into ``weight``."""
    master = init_method(torch.empty(full_shape, dtype=torch.float32), generator)
    shard = strided_slice(master, partition_dim, state.tp_size, state.tp_rank, stride)
    with torch.no_grad():
        weight.copy_(shard)


class VocabParallelEmbedding(nn.Module):
    """Embedding whose vocabulary rows are split across TP ranks: weight [V/p, h].

    Forward: ids outside this rank's range ``[r*V/p, (r+1)*V/p)`` look up row 0 and are zeroed, then the
    partial embeddings are summed over the TP group (all-reduce forward, identity backward).
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, parallel_state: ParallelState | None = None,
                 init_method: InitMethod | None = None, generator: torch.Generator | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.state = parallel_state or ParallelState.single()
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.per_partition = divide(num_embeddings, self.state.tp_size)
        self.vocab_start, self.vocab_end = vocab_range(self.per_partition, self.state.tp_rank)
        self.weight = nn.Parameter(torch.empty(self.per_partition, embedding_dim, dtype=dtype))
        set_partition(self.weight, 0)
        init_method = init_method or normal_init(0.02)
        _init_sharded(self.weight, (num_embeddings, embedding_dim), 0, self.state, init_method, generator)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.state.tp_size == 1:
            return F.embedding(input_ids, self.weight)
        outside = (input_ids < self.vocab_start) | (input_ids >= self.vocab_end)
        local_ids = (input_ids - self.vocab_start).masked_fill(outside, 0)
        partial = F.embedding(local_ids, self.weight)  # [..., h]
        partial = partial.masked_fill(outside.unsqueeze(-1), 0.0)
        return reduce_from_tensor_parallel_region(partial, self.state)


class ColumnParallelLinear(nn.Module):
    """Y = X A^T + b with A [out, in] split along ``out``: local weight [out/p, in], bias [out/p].

    ``stride`` > 1 splits A into ``stride*p`` row chunks and gives rank r chunks r, r+p, ... (the fused
    QKV layout, stride 3: rank r holds [Q_r; K_r; V_r]). Forward: copy_to (identity; all-reduce of the
    input grad) -> local linear -> optional all-gather of the output along the last dim.
    """

    def __init__(self, in_features: int, out_features: int, parallel_state: ParallelState | None = None,
                 bias: bool = True, gather_output: bool = True, init_method: InitMethod | None = None,
                 stride: int = 1, generator: torch.Generator | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.state = parallel_state or ParallelState.single()
        self.in_features = in_features
        self.out_features = out_features
        self.gather_output = gather_output
        self.stride = stride
        self.out_per_partition = divide(out_features, self.state.tp_size)
        divide(out_features, self.state.tp_size * stride)
        self.weight = nn.Parameter(torch.empty(self.out_per_partition, in_features, dtype=dtype))
        set_partition(self.weight, 0, stride)
        init_method = init_method or normal_init(0.02)
        _init_sharded(self.weight, (out_features, in_features), 0, self.state, init_method, generator, stride)
        if bias:
            self.bias = nn.Parameter(torch.zeros(self.out_per_partition, dtype=dtype))
            set_partition(self.bias, 0, stride)
        else:
            self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = copy_to_tensor_parallel_region(x, self.state)
        y = F.linear(x, self.weight, self.bias)  # [..., out/p]
        if self.gather_output:
            y = gather_from_tensor_parallel_region(y, self.state)  # [..., out]
        return y


class RowParallelLinear(nn.Module):
    """Y = X A^T + b with A [out, in] split along ``in``: local weight [out, in/p], bias [out] replicated.

    Forward: optional scatter of the input's last dim -> local linear without bias -> all-reduce(SUM)
    over the TP group (identity backward) -> + bias.
    """

    def __init__(self, in_features: int, out_features: int, parallel_state: ParallelState | None = None,
                 bias: bool = True, input_is_parallel: bool = False, init_method: InitMethod | None = None,
                 stride: int = 1, generator: torch.Generator | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.state = parallel_state or ParallelState.single()
        self.in_features = in_features
        self.out_features = out_features
        self.input_is_parallel = input_is_parallel
        self.in_per_partition = divide(in_features, self.state.tp_size)
        self.weight = nn.Parameter(torch.empty(out_features, self.in_per_partition, dtype=dtype))
        set_partition(self.weight, 1, stride)
        init_method = init_method or normal_init(0.02)
        _init_sharded(self.weight, (out_features, in_features), 1, self.state, init_method, generator, stride)
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_features, dtype=dtype))
            set_partition(self.bias, None)
        else:
            self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.input_is_parallel:
            x = scatter_to_tensor_parallel_region(x, self.state)  # [..., in/p]
        if self.state.tp_size == 1:
            return F.linear(x, self.weight, self.bias)
        y = reduce_from_tensor_parallel_region(F.linear(x, self.weight), self.state)  # [..., out]
        return y + self.bias if self.bias is not None else y

