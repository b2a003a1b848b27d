"""Broadcast a batch from the TP source rank to the rest of its TP group (GLM ``mpu/data.py``)."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def broadcast_data(keys: list[str], data: dict[str, torch.Tensor] | None, dtype: torch.dtype,
                   parallel_state: Any, device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """Return ``{key: tensor}`` on every rank of the TP group; only the TP source rank needs ``data``.

    Two broadcasts: the shapes (one int64 tensor, ``ndim`` then sizes per key), then all tensors flattened
    into one buffer of ``dtype``. ``device`` defaults to CUDA under NCCL and CPU otherwise.
    """
    state = parallel_state
    is_src = state.tp_rank == 0
    if is_src:
        if data is None:
            raise ValueError("broadcast_data: the TP source rank must pass the batch")
        for k in keys:
            if data[k].dtype != dtype:
                raise ValueError(f"broadcast_data: key {k!r} has dtype {data[k].dtype}, expected {dtype}")
    if state.tp_size == 1:
        return {k: data[k] for k in keys}
    if device is None:
        backend = dist.get_backend(state.tp_group)
        device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    max_dims = 8
    meta = torch.zeros(len(keys) * (max_dims + 1), dtype=torch.int64, device=device)
    if is_src:
        for i, k in enumerate(keys):
            shape = data[k].shape
            if len(shape) > max_dims:
                raise ValueError(f"broadcast_data: key {k!r} has {len(shape)} dims (max {max_dims})")
            meta[i * (max_dims + 1)] = len(shape)
            meta[i * (max_dims + 1) + 1:i * (max_dims + 1) + 1 + len(shape)] = torch.tensor(shape)
    dist.broadcast(meta, src=state.tp_src_rank, group=state.tp_group)
    meta_list = meta.tolist()
    shapes = []
    for i in range(len(keys)):
        nd = meta_list[i * (max_dims + 1)]
        shapes.append(tuple(meta_list[i * (max_dims + 1) + 1:i * (max_dims + 1) + 1 + nd]))
    numels = [int(torch.Size(s).numel()) for s in shapes]
    if is_src:
        flat = torch.cat([data[k].reshape(-1).to(device) for k in keys])
    else:
        flat = torch.empty(sum(numels), dtype=dtype, device=device)
    dist.broadcast(flat, src=state.tp_src_rank, group=state.tp_group)
    out, offset = {}, 0
    for k, shape, n in zip(keys, shapes, numels, strict=True):
        out[k] = flat.narrow(0, offset, n).view(shape)  # original shape of key k
        offset += n
    return out
