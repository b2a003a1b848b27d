"""GLM / SAT (Multilingual-GLM) state-dict layouts, strict loading, and tensor-parallel split/merge.

Our keys are GLM's (``modeling_glm.py``). SAT differs in two keys (``SAT_TO_GLM``); its position table has
``max_sequence_length`` rows where GLM has ``max_sequence_length + 1`` (mGLM: 1025 in both).
TP layout (GLM ``mpu/layers.py``): QKV 3-way interleaved on dim 0; word embeddings and h_to_4h (weight and bias)
on dim 0; attention dense and 4h_to_h weights on dim 1; everything else replicated.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from mpu.utils import strided_merge, strided_slice

SAT_TO_GLM = {
    "transformer.word_embeddings.weight": "word_embeddings.weight",
    "mixins.block_position_embedding.block_position_embeddings.weight":
        "transformer.block_position_embeddings.weight",
}
GLM_TO_SAT = {v: k for k, v in SAT_TO_GLM.items()}


def unwrap_checkpoint(obj: Mapping) -> dict[str, torch.Tensor]:
    """The model state dict of a released / DeepSpeed checkpoint dict (``module`` key) or a bare one."""
    if "module" in obj and isinstance(obj["module"], Mapping):
        obj = obj["module"]
    return dict(obj)


def to_glm_layout(state_dict: Mapping) -> dict[str, torch.Tensor]:
    """Accept GLM or SAT layout (optionally wrapped under ``module``) and return GLM key names."""
    sd = unwrap_checkpoint(state_dict)
    return {SAT_TO_GLM.get(k, k): v for k, v in sd.items()}


def to_sat_layout(state_dict: Mapping) -> dict[str, torch.Tensor]:
    """GLM layout -> SAT layout (the two renamed keys)."""
    return {GLM_TO_SAT.get(k, k): v for k, v in state_dict.items()}


def check_state_dict(model: nn.Module, state_dict: Mapping, source: str = "state dict") -> list[str]:
    """Every problem loading ``state_dict`` (GLM layout) into ``model``: missing/unexpected keys, shapes."""
    expected = model.state_dict()
    problems = []
    for k in expected:
        if k not in state_dict:
            problems.append(f"missing key {k!r} (expected shape {tuple(expected[k].shape)})")
    for k, v in state_dict.items():
        if k not in expected:
            problems.append(f"unexpected key {k!r}")
        elif tuple(v.shape) != tuple(expected[k].shape):
            problems.append(f"wrong shape for {k!r}: got {tuple(v.shape)}, expected {tuple(expected[k].shape)}")
    return [f"{source}: {p}" for p in problems]


def load_glm_state_dict(model: nn.Module, state_dict: Mapping, strict: bool = True,
                        source: str = "state dict") -> None:
    """Load a GLM- or SAT-layout state dict (or a checkpoint dict with ``module``) into ``model``.

    With ``strict`` any missing/unexpected key or wrong shape raises ValueError listing all of them;
    without it only the matching keys load (shape mismatches still raise).
    """
    sd = to_glm_layout(state_dict)
    problems = check_state_dict(model, sd, source)
    if not strict:
        problems = [p for p in problems if "wrong shape" in p]
        sd = {k: v for k, v in sd.items() if k in model.state_dict()}
    if problems:
        raise ValueError("cannot load checkpoint into GLMModel:\n  " + "\n  ".join(problems))
    model.load_state_dict(sd, strict=strict)


def partition_rule(name: str, ndim: int) -> tuple[int, int] | None:
    """(dim, stride) along which parameter ``name`` is split across TP ranks, or None if replicated."""
    if "query_key_value" in name:
        return 0, 3
    if name.endswith("word_embeddings.weight") or "dense_h_to_4h" in name:
        return 0, 1
    if ndim == 2 and (name.endswith("attention.dense.weight") or name.endswith("dense_4h_to_h.weight")):
        return 1, 1
    return None


def shard_state_dict(full: Mapping, tp_size: int, tp_rank: int) -> dict[str, torch.Tensor]:
    """This TP rank's state dict from the full (TP=1) one, GLM or SAT key names."""
    if tp_size < 1 or not 0 <= tp_rank < tp_size:
        raise ValueError(f"invalid tp_rank={tp_rank} for tp_size={tp_size}")
    out = {}
    for name, t in full.items():
        rule = partition_rule(name, t.dim()) if torch.is_tensor(t) else None
        if rule is None or tp_size == 1:
            out[name] = t.clone() if torch.is_tensor(t) else t
            continue
        dim, stride = rule
        if t.size(dim) % (tp_size * stride):
            raise ValueError(f"{name}: size {t.size(dim)} of dim {dim} is not divisible by "
                             f"tp_size*stride={tp_size * stride}")
        out[name] = strided_slice(t, dim, tp_size, tp_rank, stride).clone()
    return out


def merge_state_dicts(shards: list[Mapping]) -> dict[str, torch.Tensor]:
    """Full state dict from every TP rank's state dict (rank order)."""
    if not shards:
        raise ValueError("merge_state_dicts: no shards given")
    keys = list(shards[0].keys())
    for r, s in enumerate(shards[1:], start=1):
        if list(s.keys()) != keys:
            raise ValueError(f"merge_state_dicts: shard {r} has different keys than shard 0")
    out = {}
    for name in keys:
        t = shards[0][name]
        rule = partition_rule(name, t.dim()) if torch.is_tensor(t) else None
        if rule is None or len(shards) == 1:
            out[name] = t.clone() if torch.is_tensor(t) else t
        else:
            out[name] = strided_merge([s[name] for s in shards], rule[0], rule[1])
    return out


def reshard_state_dicts(shards: list[Mapping], target_tp: int) -> list[dict[str, torch.Tensor]]:
    """Re-split ``len(shards)``-way state dicts into ``target_tp`` ways."""
    full = merge_state_dicts(shards)
    return [shard_state_dict(full, target_tp, r) for r in range(target_tp)]
