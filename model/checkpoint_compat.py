"""GLM / SAT (Multilingual-GLM) state-dict layouts, strict loading, and tensor-parallel split/merge.

Our keys are GLM's (``modeling_glm.py``). SAT differs in two keys (``SAT_TO_GLM``); its position table has
``max_sequence_length`` rows where GLM has ``max_sequence_length + 1`` (mGLM: 1025 in both).
TP layout: each parameter's split dimension and stride are tags set by the layer that creates it
(``mpu.layers.set_partition``; GLM's layout: QKV 3-way interleaved on dim 0; word embeddings and h_to_4h
(weight and bias) on dim 0; attention dense and 4h_to_h weights on dim 1; everything else replicated).
Resharding reads them from a model (``partition_rules``) or from a tiny TP=1 GLM with the same keys
(``glm_partition_rules``), never from key names.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from mpu.layers import partition_of
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


PartitionRules = Mapping[str, tuple[int, int] | None]


def partition_rules(model: nn.Module) -> dict[str, tuple[int, int] | None]:
    """State-dict key -> (dim, stride) of its TP split, or None (replicated), read from the tags that
    ``mpu.layers`` puts on each parameter (``mpu.layers.partition_of``). Buffers are replicated. The tags do
    not depend on the TP size, so a model at any TP size gives the same rules."""
    return {name: partition_of(t) if isinstance(t, nn.Parameter) else None
            for name, t in model.state_dict(keep_vars=True).items()}


@functools.lru_cache(maxsize=16)
def _glm_rules(num_layers: int, block_position_encoding: bool) -> dict[str, tuple[int, int] | None]:
    from model.config import GLMConfig
    from model.glm import GLMModel

    # Only the parameter names and tags matter, and they depend on the layer count and the block position
    # table alone: a tiny TP=1 model has them all.
    config = GLMConfig(num_layers=num_layers, vocab_size=8, hidden_size=8, num_attention_heads=1,
                       max_sequence_length=4, block_position_encoding=block_position_encoding)
    with torch.random.fork_rng(devices=[]):  # nn.Embedding's own init draws from the global generator
        return partition_rules(GLMModel(config))


_LAYER_INDEX = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def glm_partition_rules(keys: Iterable[str]) -> dict[str, tuple[int, int] | None]:
    """The rules of a TP=1 ``GLMModel`` whose state dict has ``keys`` (GLM or SAT names): used where no model
    is at hand (``tools/change_mp.py``, a ZeRO-3 or hub state dict before a model exists)."""
    glm_keys = [SAT_TO_GLM.get(k, k) for k in keys]
    num_layers = 1 + max((int(m.group(1)) for k in glm_keys if (m := _LAYER_INDEX.search(k))), default=0)
    block = "transformer.block_position_embeddings.weight" in glm_keys
    return dict(_glm_rules(num_layers, block))  # a copy: the cached one must not change


def _rule(rules: PartitionRules, name: str) -> tuple[int, int] | None:
    """The rule of ``name`` (GLM or SAT key); a key the model does not have is kept whole (strict loading
    reports it)."""
    return rules.get(SAT_TO_GLM.get(name, name))


def shard_state_dict(full: Mapping, tp_size: int, tp_rank: int,
                     rules: PartitionRules | None = None) -> dict[str, torch.Tensor]:
    """This TP rank's state dict from the full (TP=1) one, GLM or SAT key names.

    ``rules``: ``partition_rules(model)`` of the model it is for (default: ``glm_partition_rules`` of the keys).
    """
    if tp_size < 1 or not 0 <= tp_rank < tp_size:
        raise ValueError(f"invalid tp_rank={tp_rank} for tp_size={tp_size}")
    if rules is None:
        rules = glm_partition_rules(full.keys())
    out = {}
    for name, t in full.items():
        rule = _rule(rules, name) if torch.is_tensor(t) else None
        if rule is None or tp_size == 1:
            out[name] = t.clone() if torch.is_tensor(t) else t
            continue
        dim, stride = rule
        if t.size(dim) % (tp_size * stride):
            raise ValueError(f"{name}: size {t.size(dim)} of dim {dim} is not divisible by "
                             f"tp_size*stride={tp_size * stride}")
        out[name] = strided_slice(t, dim, tp_size, tp_rank, stride).clone()
    return out


def merge_state_dicts(shards: list[Mapping], rules: PartitionRules | None = None) -> dict[str, torch.Tensor]:
    """Full state dict from every TP rank's state dict (rank order); ``rules`` as in ``shard_state_dict``."""
    if not shards:
        raise ValueError("merge_state_dicts: no shards given")
    keys = list(shards[0].keys())
    if rules is None:
        rules = glm_partition_rules(keys)
    for r, s in enumerate(shards[1:], start=1):
        if list(s.keys()) != keys:
            raise ValueError(f"merge_state_dicts: shard {r} has different keys than shard 0")
    out = {}
    for name in keys:
        t = shards[0][name]
        rule = _rule(rules, name) if torch.is_tensor(t) else None
        if rule is None and torch.is_tensor(t) and SAT_TO_GLM.get(name, name) not in rules:
            # Not the model's: its split is unknown, so keeping rank 0's copy is right only for a replica.
            for r, s in enumerate(shards[1:], start=1):
                if not (torch.is_tensor(s[name]) and s[name].shape == t.shape and torch.equal(s[name], t)):
                    raise ValueError(f"merge_state_dicts: key {name!r} is not a parameter of the model and "
                                     f"differs between TP shard 0 and shard {r}; expected a replica")
        if rule is None or len(shards) == 1:
            out[name] = t.clone() if torch.is_tensor(t) else t
        else:
            out[name] = strided_merge([s[name] for s in shards], rule[0], rule[1])
    return out


def reshard_state_dicts(shards: list[Mapping], target_tp: int,
                        rules: PartitionRules | None = None) -> list[dict[str, torch.Tensor]]:
    """Re-split ``len(shards)``-way state dicts into ``target_tp`` ways."""
    full = merge_state_dicts(shards, rules)
    return [shard_state_dict(full, target_tp, r, rules) for r in range(target_tp)]
