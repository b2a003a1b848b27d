"""Atomic, self-describing checkpoints in DeepSpeed's native layout.

    <save>/latest                               the tag of the newest complete checkpoint
    <save>/<tag>/mp_rank_XX_model_states.pt     weights under "module" (+ optimizer for the torch engine)
    <save>/<tag>/*zero_pp_rank_*optim_states.pt ZeRO shards (DeepSpeed engine, ZeRO >= 1)
    <save>/<tag>/rng_rank_XXXXX.pt              every rank's RNG states (python, numpy, torch, cuda, tracker)
    <save>/<tag>/meta.json                      configs, TP/DP sizes, step, data position, code version

A save writes into ``<tag>.partial``; only after every rank has finished does rank 0 add ``meta.json``,
rename the directory to ``<tag>`` and replace ``latest`` (written to a temp file, then ``os.replace``).
A crash mid-save therefore leaves ``latest`` on the previous complete checkpoint. Loading reads
``meta.json`` first and refuses, before touching tensors, a checkpoint made for another TP size or
another architecture.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

META = "meta.json"
LATEST = "latest"
OLD = ".old"  # a checkpoint being replaced by a re-save of the same step
PARTIAL = ".partial"


def tag_for_step(step: int) -> str:
    return f"global_step{step}"


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def code_version() -> str:
    """``git describe`` of the source tree when available (users run from a clone), else 'unknown'."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def rng_state(tracker=None) -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    if tracker is not None:
        state["tracker"] = tracker.get_states()
    return state


def set_rng_state(state: dict[str, Any], tracker=None) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if tracker is not None and state.get("tracker") is not None:
        tracker.set_states(state["tracker"])


def save_checkpoint(engine, save_dir: str | os.PathLike, step: int, meta: dict[str, Any], client_state: dict,
                    rank: int, tracker=None) -> Path:
    """Collective: every rank calls it. Returns the final checkpoint directory."""
    save_dir = Path(save_dir)
    tag = tag_for_step(step)
    partial = tag + PARTIAL
    if rank == 0:
        save_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(save_dir / partial, ignore_errors=True)  # leftovers of a crashed save
    _barrier()
    engine.save(str(save_dir), partial, client_state)
    torch.save(rng_state(tracker), save_dir / partial / f"rng_rank_{rank:05d}.pt")
    _barrier()
    if rank == 0:
        meta = {**meta, "step": step, "tag": tag, "code_version": code_version()}
        _write_atomic(save_dir / partial / META, json.dumps(meta, indent=2, sort_keys=True, default=str))
        final = save_dir / tag
        old = save_dir / (tag + OLD)
        if final.exists():  # a re-run saving the same step replaces it: move it aside, never delete first,
            shutil.rmtree(old, ignore_errors=True)  # so a crash between the renames leaves a loadable copy
            os.replace(final, old)  # (``resolve`` falls back to it)
        os.replace(save_dir / partial, final)
        _write_atomic(save_dir / LATEST, tag)
        shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return save_dir / tag


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def resolve(load: str | os.PathLike) -> tuple[Path, str]:
    """``--load`` may name the save directory (read ``latest``) or one tag directory inside it."""
    p = Path(load)
    if not p.exists():
        raise FileNotFoundError(f"--load {p}: no such checkpoint directory")
    if (p / LATEST).is_file():
        tag = (p / LATEST).read_text(encoding="utf-8").strip()
        if not (p / tag / META).is_file() and (p / (tag + OLD) / META).is_file():
            return p, tag + OLD  # a crash while the same step was being re-saved: the previous copy is whole
        if not (p / tag / META).is_file():
            raise FileNotFoundError(f"{p / LATEST} names tag {tag!r} but {p / tag / META} is missing (incomplete checkpoint)")
        return p, tag
    if (p / META).is_file():
        return p.parent, p.name
    raise FileNotFoundError(f"--load {p}: neither a save directory with a '{LATEST}' file nor a checkpoint with {META}")


def read_meta(load_dir: Path, tag: str) -> dict[str, Any]:
    with open(load_dir / tag / META, encoding="utf-8") as f:
        return json.load(f)


def check_compatible(meta: dict[str, Any], model_config: dict[str, Any], tp_size: int, where: str,
                     dp_size: int | None = None) -> None:
    """Refuse a resume into another TP size, DP size or architecture, naming what differs.

    DP size: an exact resume needs it (ZeRO partitions of the optimizer state and the position in the data
    order are per DP rank); ``--load-pretrained`` starts from the weights at any size. A checkpoint that
    holds no optimizer state (``tools/change_mp.py`` output: its resume is not exact anyway, and the
    engine says so) may be resumed at another DP size, e.g. TP 1 x DP 2 resharded to TP 2 x DP 1."""
    if (dp_size is not None and meta.get("dp_size") is not None and meta["dp_size"] != dp_size
            and meta.get("optimizer_state", True) is not False):
        raise ValueError(
            f"{where}: checkpoint was written with data-parallel size {meta['dp_size']}, this run uses {dp_size}; "
            "resume with the same number of processes per TP group, or start from its weights with "
            "--load-pretrained")
    if meta.get("tp_size") != tp_size:
        raise ValueError(
            f"{where}: checkpoint was written with tensor-parallel size {meta.get('tp_size')}, this run uses "
            f"{tp_size}; reshard it first with tools/change_mp.py"
        )
    saved = meta.get("model_config", {})
    keys = ("num_layers", "hidden_size", "num_attention_heads", "vocab_size", "max_sequence_length")
    diff = [f"{k}: checkpoint {saved.get(k)} vs run {model_config.get(k)}" for k in keys if saved.get(k) != model_config.get(k)]
    if diff:
        raise ValueError(f"{where}: checkpoint architecture differs from this run ({'; '.join(diff)})")


def load_rng(load_dir: Path, tag: str, rank: int, tracker=None) -> bool:
    p = load_dir / tag / f"rng_rank_{rank:05d}.pt"
    if not p.is_file():
        return False
    set_rng_state(torch.load(p, map_location="cpu", weights_only=False), tracker)
    return True


# --------------------------------------------------------------------------------- weights only
def _model_state_files(path: Path) -> list[Path]:
    files = sorted(path.glob("mp_rank_*_model_states.pt"))
    return files


def find_pretrained_files(path: str | os.PathLike) -> list[Path]:
    """Model-state files of a pretrained checkpoint in any of the layouts users have:

    - our / DeepSpeed save directory (``latest``) or GLM's (``latest_checkpointed_iteration.txt``);
    - one tag directory holding ``mp_rank_XX_model_states.pt`` (released GLM models);
    - a single ``.pt`` file (mGLM's ``pretrained.pt``: a dict with ``module``, or a bare state dict).
    Returns the files in TP-rank order.
    """
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise FileNotFoundError(f"--load-pretrained {p}: no such file or directory")
    for tracker in (LATEST, "latest_checkpointed_iteration.txt"):
        if (p / tracker).is_file():
            tag = (p / tracker).read_text(encoding="utf-8").strip()
            files = _model_state_files(p / tag)
            if files:
                return files
            raise FileNotFoundError(f"{p / tracker} names {tag!r} but {p / tag} holds no mp_rank_XX_model_states.pt")
    files = _model_state_files(p)
    if files:
        return files
    raise FileNotFoundError(f"--load-pretrained {p}: no mp_rank_XX_model_states.pt, no 'latest' tracker, not a .pt file")


def pretrained_vocab_rows(path: str | os.PathLike, meta: dict[str, Any] | None = None) -> int:
    """Rows of the word-embedding table of a pretrained checkpoint (summed over its TP shards).

    ``meta``: the checkpoint's ``meta.json`` (looked up when None; ours record the model config); without
    one the table is read from the files (memory-mapped where the serialisation allows it)."""
    if meta is None:
        meta = pretrained_meta(path)
    if meta and "model_config" in meta:
        return int(meta["model_config"]["vocab_size"])
    from model.checkpoint_compat import to_glm_layout

    rows = 0
    for f in find_pretrained_files(path):
        try:
            obj = torch.load(f, map_location="cpu", weights_only=False, mmap=True)
        except RuntimeError:  # legacy (non-zip) serialisation cannot be memory-mapped
            obj = torch.load(f, map_location="cpu", weights_only=False)
        w = to_glm_layout(obj).get("word_embeddings.weight") if isinstance(obj, dict) else None
        if w is None:
            raise ValueError(f"{f}: no word_embeddings.weight; not a GLM checkpoint")
        rows += int(w.shape[0])
    return rows


def pretrained_meta(path: str | os.PathLike | None) -> dict[str, Any] | None:
    """The ``meta.json`` of a ``--load-pretrained`` checkpoint written by this framework (a save dir, a tag
    dir or a ZeRO-3 tag dir); None without a path or for other layouts (GLM's, released single files)."""
    if not path:
        return None
    from model import hf_compat

    if hf_compat.is_hub_folder(path):  # a Hugging Face hub folder: its config.json and tokenizer
        return hf_compat.hub_meta(path)
    p = Path(path)
    z = _zero3_checkpoint(p)
    tag_dir = z[0] / z[1] if z else find_pretrained_files(p)[0].parent
    f = tag_dir / META
    return json.loads(f.read_text(encoding="utf-8")) if f.is_file() else None


def embedding_rows(tokenizer, tp_size: int, multiple: int = 128, pretrained: str | os.PathLike | None = None,
                   meta: dict[str, Any] | None = None, tokenizer_path: str = "") -> int:
    """Rows of the word-embedding table of a model run at ``tp_size``.

    A new model: the tokenizer's ids padded to ``multiple x tp_size``. A model initialised from
    ``pretrained``: the checkpoint's rows, unchanged, because the weights are loaded strictly. They must be
    this tokenizer padded to ``multiple x k`` for a TP size ``k`` the source may have been saved at (the
    one check that the tokenizer is the one the model was trained with) and divide over ``tp_size`` (the
    table is split in equal parts). So mGLM's released 250,112-row table (250,009 ids padded to 128) runs
    at TP 1, 2, 4 and 8, although a new model at TP 4 would get 250,368 rows."""
    if pretrained is None:
        return tokenizer.padded_vocab_size(multiple, tp_size)
    rows = pretrained_vocab_rows(pretrained, meta)
    accepted = {tokenizer.padded_vocab_size(multiple, k) for k in (1, 2, 4, 8, 16, 32, 64)}
    if rows not in accepted:
        raise ValueError(f"--load-pretrained {pretrained}: its vocabulary has {rows} rows, but the tokenizer "
                         f"{tokenizer_path} has {len(tokenizer)} tokens (its padded table has "
                         f"{' or '.join(map(str, sorted(accepted)))} rows); use the tokenizer the model was "
                         f"pretrained with")
    if rows % tp_size:
        raise ValueError(f"--load-pretrained {pretrained}: its {rows} vocabulary rows do not split over "
                         f"tensor-parallel size {tp_size}")
    return rows


def _zero3_checkpoint(p: Path) -> tuple[Path, str] | None:
    """(save dir, tag) when ``p`` is a ZeRO-3 checkpoint (partitioned model states, no mp_rank files)."""
    if p.is_dir() and (p / LATEST).is_file():
        p = p / (p / LATEST).read_text(encoding="utf-8").strip()
    if p.is_dir() and not _model_state_files(p) and any(p.glob("zero_pp_rank_*_mp_rank_*_model_states.pt")):
        if any(p.glob("zero_pp_rank_*_mp_rank_01_model_states.pt")):
            raise ValueError(f"{p}: ZeRO-3 checkpoint with tensor parallelism; consolidate it per TP rank first")
        return p.parent, p.name
    return None


def load_pretrained(model, path: str | os.PathLike, parallel_state) -> str:
    """Load weights only (GLM or SAT key layout, any TP size of the source) into ``model``, strictly.

    A source with another TP size is merged and re-split for this rank. Position tables of a source with
    fewer rows (a shorter ``max_sequence_length``) are copied into the first rows, as GLM's
    ``load_pretrained`` does when finetuning extends positions; every other mismatch is an error naming it.
    """
    from model import hf_compat

    if hf_compat.is_hub_folder(path):  # a directory with config.json in hub layout
        return hf_compat.load_hub_folder(model, path, parallel_state)
    from model.checkpoint_compat import (
        load_glm_state_dict,
        merge_state_dicts,
        shard_state_dict,
        to_glm_layout,
    )

    zero3 = _zero3_checkpoint(Path(path))
    if zero3 is not None:
        # ZeRO-3 keeps only partitions: rebuild the fp32 weights with DeepSpeed's own tool.
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        load_dir, tag = zero3
        full = to_glm_layout(get_fp32_state_dict_from_zero_checkpoint(str(load_dir), tag=tag))
        sd = shard_state_dict(full, parallel_state.tp_size, parallel_state.tp_rank)
        load_glm_state_dict(model, sd, strict=True, source=str(load_dir / tag))
        return f"{load_dir / tag} (ZeRO-3 partitions)"
    files = find_pretrained_files(path)
    shards = []
    for f in files:
        try:
            obj = torch.load(f, map_location="cpu", weights_only=False)
        except Exception as e:  # pickle / zip errors carry no file name
            raise ValueError(f"{f}: not a readable torch checkpoint ({type(e).__name__}: {e})") from None
        if not isinstance(obj, dict):
            raise ValueError(f"{f}: expected a dict (a state dict or a checkpoint with 'module'), got {type(obj).__name__}")
        shards.append(to_glm_layout(obj))
    tp, rank = parallel_state.tp_size, parallel_state.tp_rank
    if len(shards) == tp:
        sd = shards[rank]
    else:
        sd = shard_state_dict(merge_state_dicts(shards), tp, rank)
    own = model.state_dict()
    for name in ("transformer.position_embeddings.weight", "transformer.block_position_embeddings.weight"):
        if name in sd and name in own and sd[name].shape[0] < own[name].shape[0] and sd[name].shape[1:] == own[name].shape[1:]:
            grown = own[name].detach().clone().cpu()
            grown[: sd[name].shape[0]] = sd[name]
            sd[name] = grown
    load_glm_state_dict(model, sd, strict=True, source=", ".join(map(str, files)))
    return ", ".join(map(str, files))
