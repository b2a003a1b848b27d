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

Integrity: ``meta.json`` records every file's size and sha256 (``files``); ``--load`` verifies them before
reading a tensor and falls back from a damaged or incomplete newest checkpoint to the newest intact one
(``resolve_intact``). Every file is read through ``common.safe_load`` (weights-only unpickling). One run
writes a save directory at a time (``lock_save_dir``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import fnmatch
import hashlib
import json
import logging
import os
import random
import shutil
import socket
import subprocess
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from common import safe_load
from common.errors import DataError, UsageError

META = "meta.json"
LATEST = "latest"
GLM_LATEST = "latest_checkpointed_iteration.txt"  # GLM's tracker file; ours and DeepSpeed's is ``latest``
TRACKERS = (LATEST, GLM_LATEST)
MODEL_STATES_GLOB = "mp_rank_*_model_states.pt"
OLD = ".old"  # a checkpoint being replaced by a re-save of the same step
PARTIAL = ".partial"


def model_states_name(tp_rank: int) -> str:
    """The weights file of TP rank ``tp_rank`` in a tag directory (DeepSpeed's and GLM's name)."""
    return f"mp_rank_{tp_rank:02d}_model_states.pt"


def read_tracker(save_dir: Path) -> str | None:
    """The tag the tracker file of ``save_dir`` names (ours first, then GLM's); None without one."""
    for tracker in TRACKERS:
        path = save_dir / tracker
        if path.is_file():
            tag = path.read_text(encoding="utf-8").strip()
            if not tag:
                raise ValueError(f"{path}: empty tag")
            return tag
    return None


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
    """Every RNG stream, as tensors, ints and strings only (so the file loads weights-only): numpy's
    uint32 key array is stored as an int64 tensor."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    if tracker is not None:
        state["tracker"] = tracker.get_states()
    return state


def set_rng_state(state: dict[str, Any], tracker=None) -> None:
    random.setstate(state["python"])
    kind, keys, *rest = state["numpy"]  # keys: a tensor (ours) or a numpy array (files of earlier versions)
    keys = keys.numpy() if torch.is_tensor(keys) else np.asarray(keys)
    np.random.set_state((kind, keys.astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if tracker is not None and state.get("tracker") is not None:
        tracker.set_states(state["tracker"])


class DiskFullError(DataError):
    """A save ran out of space; ``latest`` still names the previous complete checkpoint."""


class DamagedCheckpointError(DataError):
    """A file of a checkpoint differs from what its ``meta.json`` records, or is missing."""


def save_checkpoint(engine, save_dir: str | os.PathLike, step: int, meta: dict[str, Any], client_state: dict,
                    rank: int, tracker=None) -> Path:
    """Collective: every rank calls it. Returns the final checkpoint directory.

    ``meta.json`` gets ``files``: name -> size and sha256 of every file of the checkpoint, hashed right after
    the ranks have written them (each rank hashes a share, see ``file_records``). Running out of space is a
    ``DiskFullError`` naming the file and the checkpoint ``latest`` still names."""
    save_dir = Path(save_dir)
    tag = tag_for_step(step)
    partial = tag + PARTIAL
    if rank == 0:
        save_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(save_dir / partial, ignore_errors=True)  # leftovers of a crashed save
    _barrier()
    with _disk_full_named(save_dir, save_dir / partial):
        engine.save(str(save_dir), partial, client_state)
        rng_path = save_dir / partial / f"rng_rank_{rank:05d}.pt"
        with _disk_full_named(save_dir, rng_path):
            torch.save(rng_state(tracker), rng_path)
    _barrier()
    # Rank 0's listing for every rank: on a network filesystem another node's view of a fresh directory
    # may lag, and every rank must hash its share of the same list.
    names = [sorted(f.name for f in (save_dir / partial).iterdir() if f.is_file() and f.name != META) if rank == 0
             else None]
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.broadcast_object_list(names, src=0)
    files = file_records(save_dir / partial, names[0])
    if rank == 0:
        meta = {**meta, "step": step, "tag": tag, "code_version": code_version(), "files": files}
        with _disk_full_named(save_dir, save_dir / partial / META):
            _write_atomic(save_dir / partial / META, json.dumps(meta, indent=2, sort_keys=True, default=str))
        final = save_dir / tag
        old = save_dir / (tag + OLD)
        if final.exists():  # a re-run saving the same step replaces it: move it aside, never delete first,
            shutil.rmtree(old, ignore_errors=True)  # so a crash between the renames leaves a loadable copy
            os.replace(final, old)  # (``resolve`` falls back to it)
        os.replace(save_dir / partial, final)
        with _disk_full_named(save_dir, save_dir / LATEST):
            _write_atomic(save_dir / LATEST, tag)
        shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return save_dir / tag


@contextlib.contextmanager
def _disk_full_named(save_dir: Path, writing: Path):
    """Turn "no space left" (an ``OSError`` ENOSPC, or torch's zip writer failing on a full disk, which
    says only ``unexpected pos`` / ``file write failed``) into one line naming the file being written and
    the checkpoint ``latest`` still names. The partial directory stays; the next save removes it."""
    try:
        yield
    except DiskFullError:
        raise
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        raise DiskFullError(_disk_full_message(save_dir, Path(e.filename) if e.filename else writing)) from None
    except RuntimeError as e:
        text = str(e)
        if not (("write" in text or "unexpected pos" in text) and _free_bytes(save_dir) < (64 << 20)):
            raise
        raise DiskFullError(_disk_full_message(save_dir, writing)) from None


def _free_bytes(path: Path) -> int:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return 1 << 62


def _disk_full_message(save_dir: Path, writing: Path) -> str:
    try:
        latest = (save_dir / LATEST).read_text(encoding="utf-8").strip()
        still = f"`latest` still names {save_dir / latest}"
    except OSError:
        still = f"{save_dir} has no complete checkpoint yet (no `latest`)"
    return f"no space left on device writing {writing}; {still}"


def file_records(folder: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    """``{name: {"size", "sha256"}}`` of ``folder/name`` for every name. Collective when a process group
    exists (every rank must call it with the same names): rank r hashes names[r::world], and the records
    are exchanged, so hashing a checkpoint takes the time of its largest share, not of the whole."""
    world = dist.get_world_size() if dist.is_initialized() else 1
    rank = dist.get_rank() if dist.is_initialized() else 0
    mine = {n: {"size": (folder / n).stat().st_size, "sha256": sha256_of(folder / n)} for n in names[rank::world]}
    if world == 1:
        return dict(sorted(mine.items()))
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, mine)
    return dict(sorted((k, v) for part in gathered for k, v in part.items()))


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def verify_files(folder: Path, meta: dict[str, Any], names: list[str] | None = None) -> str | None:
    """The first problem of ``folder`` against the records of its ``meta.json`` (None: intact). ``names``
    restricts the check to the files a caller reads (``--load-pretrained`` reads no optimizer state).
    Collective when a process group exists, like ``file_records``."""
    records = meta.get("files") or {}
    names = sorted(records) if names is None else sorted(names)
    problems = []
    for n in names:
        rec = records.get(n)
        f = folder / n
        if rec is None:
            problems.append(f"{f} is not listed in {folder / META}")
        elif not f.is_file():
            problems.append(f"{f} is missing")
        elif f.stat().st_size != rec["size"]:
            problems.append(f"{f} has {f.stat().st_size} bytes, {META} records {rec['size']} (truncated or replaced)")
    if problems:
        return problems[0]
    actual = file_records(folder, names)
    for n in names:
        if actual[n]["sha256"] != records[n]["sha256"]:
            return f"{folder / n} is damaged: its sha256 differs from the one {META} records"
    return None


def _unverified_warning(folder: Path) -> None:
    logging.getLogger("mglm").warning(
        "%s: %s records no file hashes (written by an earlier version): loading it unverified", folder, META)


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
    f = load_dir / tag / META
    try:
        meta = json.loads(f.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DamagedCheckpointError(f"{f}:{e.lineno}: not valid JSON ({e.msg})") from None
    except UnicodeDecodeError:
        raise DamagedCheckpointError(f"{f}: not UTF-8 text") from None
    if not isinstance(meta, dict):
        raise DamagedCheckpointError(f"{f}: expected a JSON object, found {type(meta).__name__}")
    return meta


def resolve_intact(load: str | os.PathLike, *, weights_only: bool = False) -> tuple[Path, str, dict[str, Any]]:
    """``--load``: (save dir, tag, meta) of a checkpoint whose files match its ``meta.json``.

    A save directory whose newest checkpoint (``latest``) is damaged or incomplete falls back to the newest
    intact one before it, with a warning naming both (a job preempted mid-save, a file damaged on disk). A
    tag directory named explicitly is verified without fallback. Checkpoints of earlier versions (no
    ``files`` in ``meta.json``) load unverified, with a warning. ``weights_only`` (generation, which reads no
    optimizer state) judges a checkpoint by its model-state files alone (``weight_names``). Each candidate's
    ``meta.json`` is read once. Collective when a process group exists."""
    p = Path(load)
    try:
        load_dir, tag = resolve(p)
    except FileNotFoundError as e:
        if not (p / LATEST).is_file():
            raise
        load_dir, tag, meta, first_problem = p, (p / LATEST).read_text(encoding="utf-8").strip(), None, str(e)
    else:
        meta, first_problem = _read_meta_problem(load_dir, tag)
        if meta is not None:
            first_problem = _files_problem(load_dir / tag, meta, weight_names(meta) if weights_only else None)
            if first_problem is None:
                return load_dir, tag, meta
        if not (p / LATEST).is_file():  # a tag directory named explicitly: no other choice to make
            raise DamagedCheckpointError(f"--load {load_dir / tag}: {first_problem}")
    for other, other_meta in _older_checkpoints(load_dir, _step_of(tag, meta), exclude=tag):
        names = weight_names(other_meta) if weights_only and other_meta is not None else None
        if other_meta is not None and _files_problem(load_dir / other, other_meta, names) is None:
            logging.getLogger("mglm").warning(
                "--load %s: the newest checkpoint %s is damaged or incomplete (%s); resuming from %s, the newest "
                "intact one", load_dir, load_dir / tag, first_problem, load_dir / other)
            return load_dir, other, other_meta
    raise DamagedCheckpointError(f"--load {load_dir}: the newest checkpoint {load_dir / tag} is damaged or "
                                 f"incomplete ({first_problem}) and no older checkpoint is intact")


def weight_names(meta: dict[str, Any]) -> list[str] | None:
    """The recorded files that hold a checkpoint's weights (``mp_rank_XX_model_states.pt``); None (all files)
    for a ZeRO-3 checkpoint, whose weights are rebuilt from its optimizer partitions."""
    return sorted(n for n in meta.get("files") or {} if fnmatch.fnmatch(n, MODEL_STATES_GLOB)) or None


def _read_meta_problem(load_dir: Path, tag: str) -> tuple[dict[str, Any] | None, str | None]:
    """(meta, None), or (None, what is wrong with ``load_dir/tag/meta.json``: missing or broken)."""
    if not (load_dir / tag / META).is_file():
        return None, f"{load_dir / tag / META} is missing (incomplete checkpoint)"
    try:
        return read_meta(load_dir, tag), None
    except DamagedCheckpointError as e:
        return None, str(e)


def _files_problem(folder: Path, meta: dict[str, Any], names: list[str] | None) -> str | None:
    """The first file of ``folder`` (of ``names``; None: all) that differs from ``meta``'s records; None when
    intact, or unverifiable because an earlier version wrote it without records (with a warning)."""
    if "files" not in meta:
        _unverified_warning(folder)
        return None
    return verify_files(folder, meta, names)


def _step_of(tag: str, meta: dict[str, Any] | None) -> float:
    """The step of a tag: ``meta.json``'s, else the number in ``global_stepN``, else +inf (unknown)."""
    try:
        return int(meta["step"])  # type: ignore[index]
    except (KeyError, TypeError, ValueError):
        digits = "".join(ch for ch in tag.split(".")[0] if ch.isdigit())
        return int(digits) if digits else float("inf")


def _older_checkpoints(load_dir: Path, below: float, exclude: str) -> list[tuple[str, dict[str, Any] | None]]:
    """(tag, meta or None when broken) of the complete-looking checkpoints (a ``meta.json``, not ``.partial``)
    of ``load_dir`` at steps <= ``below``, newest first."""
    found = {d.name: _read_meta_problem(load_dir, d.name)[0] for d in load_dir.iterdir()
             if d.is_dir() and d.name != exclude and not d.name.endswith(PARTIAL) and (d / META).is_file()}
    steps = {t: _step_of(t, meta) for t, meta in found.items()}
    return sorted(((t, found[t]) for t in found if steps[t] <= below),
                  key=lambda tm: (steps[tm[0]], not tm[0].endswith(OLD)), reverse=True)


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


def load_rng(load_dir: Path, tag: str, rank: int, tracker=None, *, trust: bool = False) -> bool:
    """Restore this rank's RNG streams. A missing file is an error (the resume would silently draw other
    dropout masks and batches), unless ``meta.json`` says the checkpoint has none (``tools/change_mp.py``
    output: the streams of one TP size do not map to another), which is logged. Returns whether restored."""
    p = load_dir / tag / f"rng_rank_{rank:05d}.pt"
    if not p.is_file():
        meta = read_meta(load_dir, tag)
        if meta.get("rng_state", "resharded_from" not in meta) is False:  # earlier reshards record no flag
            logging.getLogger("mglm").warning("%s holds no RNG state (resharded by tools/change_mp.py): the "
                                              "resumed run draws fresh random streams", load_dir / tag)
            return False
        raise DamagedCheckpointError(f"--load {load_dir / tag}: {p.name} is missing (rank {rank}'s RNG state); "
                                     "the checkpoint is incomplete")
    state = safe_load.load(p, trust=trust, what="--load")
    try:
        set_rng_state(state, tracker)
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
        raise DamagedCheckpointError(f"--load {p}: not an RNG state file ({type(e).__name__}: {e})") from None
    return True


# --------------------------------------------------------------------------------- weights only
def model_state_files(path: Path) -> list[Path]:
    """The ``mp_rank_XX_model_states.pt`` files of a tag directory, in TP-rank order."""
    return sorted(path.glob(MODEL_STATES_GLOB))


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
    for tracker in TRACKERS:
        if (p / tracker).is_file():
            tag = (p / tracker).read_text(encoding="utf-8").strip()
            files = model_state_files(p / tag)
            if files:
                return files
            raise FileNotFoundError(f"{p / tracker} names {tag!r} but {p / tag} holds no mp_rank_XX_model_states.pt")
    files = model_state_files(p)
    if files:
        return files
    raise FileNotFoundError(f"--load-pretrained {p}: no mp_rank_XX_model_states.pt, no 'latest' tracker, not a .pt file")


def pretrained_vocab_rows(path: str | os.PathLike, meta: dict[str, Any] | None = None, *, trust: bool = False) -> int:
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
        # Memory-mapped: only the embedding table's pages are read. Legacy (non-zip) files cannot be.
        mmap = zipfile.is_zipfile(f)
        obj = safe_load.load(f, trust=trust, mmap=mmap, what="--load-pretrained")
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
    return read_meta(tag_dir.parent, tag_dir.name) if (tag_dir / META).is_file() else None


def embedding_rows(tokenizer, tp_size: int, multiple: int = 128, pretrained: str | os.PathLike | None = None,
                   meta: dict[str, Any] | None = None, tokenizer_path: str = "", *, trust: bool = False) -> int:
    """Rows of the word-embedding table of a model run at ``tp_size``.

    A new model: the tokenizer's ids padded to ``multiple x tp_size``. A model initialised from
    ``pretrained``: the checkpoint's rows, unchanged, because the weights are loaded strictly. They must be
    this tokenizer padded to ``multiple x k`` for a TP size ``k`` the source may have been saved at (the
    one check that the tokenizer is the one the model was trained with) and divide over ``tp_size`` (the
    table is split in equal parts). So mGLM's released 250,112-row table (250,009 ids padded to 128) runs
    at TP 1, 2, 4 and 8, although a new model at TP 4 would get 250,368 rows."""
    if pretrained is None:
        return tokenizer.padded_vocab_size(multiple, tp_size)
    rows = pretrained_vocab_rows(pretrained, meta, trust=trust)
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
    if p.is_dir() and not model_state_files(p) and any(p.glob("zero_pp_rank_*_mp_rank_*_model_states.pt")):
        if any(p.glob("zero_pp_rank_*_mp_rank_01_model_states.pt")):
            raise ValueError(f"{p}: ZeRO-3 checkpoint with tensor parallelism; consolidate it per TP rank first")
        return p.parent, p.name
    return None


def load_pretrained(model, path: str | os.PathLike, parallel_state, *, trust: bool = False,
                    verified: bool = False) -> str:
    """Load weights only (GLM or SAT key layout, any TP size of the source) into ``model``, strictly.

    A source with another TP size is merged and re-split for this rank. Position tables of a source with
    fewer rows (a shorter ``max_sequence_length``) are copied into the first rows, as GLM's
    ``load_pretrained`` does when finetuning extends positions; every other mismatch is an error naming it.
    Files of our checkpoints are verified against their ``meta.json`` first, unless ``verified`` (the caller
    took ``path`` from ``resolve_intact``); every file is read weights-only unless ``trust``
    (``--trust-checkpoint``). Collective when a process group exists (verification).
    """
    from model import hf_compat

    if hf_compat.is_hub_folder(path):  # a directory with config.json in hub layout
        return hf_compat.load_hub_folder(model, path, parallel_state, trust=trust)
    from model.checkpoint_compat import (
        load_glm_state_dict,
        merge_state_dicts,
        partition_rules,
        shard_state_dict,
        to_glm_layout,
    )

    zero3 = _zero3_checkpoint(Path(path))
    if zero3 is not None:
        # ZeRO-3 keeps only partitions: rebuild the fp32 weights with DeepSpeed's own tool.
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        load_dir, tag = zero3
        if not verified:
            verify_tag_dir(load_dir / tag, None)
        with safe_load.torch_loads(trust):  # zero_to_fp32 calls torch.load(weights_only=False) itself
            full = to_glm_layout(get_fp32_state_dict_from_zero_checkpoint(str(load_dir), tag=tag))
        sd = shard_state_dict(full, parallel_state.tp_size, parallel_state.tp_rank, partition_rules(model))
        load_glm_state_dict(model, sd, strict=True, source=str(load_dir / tag))
        return f"{load_dir / tag} (ZeRO-3 partitions)"
    files = find_pretrained_files(path)
    if not verified:
        verify_tag_dir(files[0].parent, [f.name for f in files])
    shards = []
    for f in files:
        obj = safe_load.load(f, trust=trust, what="--load-pretrained")
        if not isinstance(obj, dict):
            raise ValueError(f"{f}: expected a dict (a state dict or a checkpoint with 'module'), got {type(obj).__name__}")
        shards.append(to_glm_layout(obj))
    tp, rank = parallel_state.tp_size, parallel_state.tp_rank
    if len(shards) == tp:
        sd = shards[rank]
    else:
        rules = partition_rules(model)
        sd = shard_state_dict(merge_state_dicts(shards, rules), tp, rank, rules)
    own = model.state_dict()
    for name in ("transformer.position_embeddings.weight", "transformer.block_position_embeddings.weight"):
        if name in sd and name in own and sd[name].shape[0] < own[name].shape[0] and sd[name].shape[1:] == own[name].shape[1:]:
            grown = own[name].detach().clone().cpu()
            grown[: sd[name].shape[0]] = sd[name]
            sd[name] = grown
    load_glm_state_dict(model, sd, strict=True, source=", ".join(map(str, files)))
    return ", ".join(map(str, files))


def verify_tag_dir(tag_dir: Path, names: list[str] | None, what: str = "--load-pretrained") -> None:
    """Our checkpoints (a ``meta.json`` with ``files``): the files to be read (``names``; None: all) must match
    their records, else ``DamagedCheckpointError`` naming the file. Others (GLM's, released single files,
    earlier versions) carry no records and are read as they are."""
    if not (tag_dir / META).is_file():
        return
    meta, problem = _read_meta_problem(tag_dir.parent, tag_dir.name)
    if meta is not None:
        problem = _files_problem(tag_dir, meta, names)
    if problem:
        raise DamagedCheckpointError(f"{what} {tag_dir}: {problem}")


# --------------------------------------------------------------------------------- one writer per --save
LOCK = ".lock"


class SaveDirLocked(UsageError):
    """Another run holds the lock of this save directory."""


class SaveLock:
    """An exclusive ``flock`` on ``<save>/.lock``, held by global rank 0 for the whole run.

    The file holds the holder's host, pid and start time, shown to a run that is refused. The kernel drops
    the lock when the process ends in any way (kill -9 included), so a stale file never blocks; ``release``
    drops it at the end of a run. On a filesystem without working ``flock`` (some FUSE or Lustre mounts
    without ``-o flock``) the run goes on unlocked, with a warning."""

    def __init__(self, save_dir: str | os.PathLike):
        self.path = Path(save_dir) / LOCK
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "unknown holder"
            os.close(fd)
            raise SaveDirLocked(f"--save {self.path.parent}: another run is writing to it ({holder}; lock file "
                                f"{self.path}); wait for it to end or choose another --save") from None
        except OSError as e:  # ENOLCK, EOPNOTSUPP: the filesystem offers no locks
            os.close(fd)
            logging.getLogger("mglm").warning("--save %s: cannot lock %s (%s); a second run on this directory "
                                              "would not be refused", self.path.parent, self.path, e.strerror)
            return
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"host {socket.gethostname()}, pid {os.getpid()}, since "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n".encode(), 0)
        self._fd = fd
        _HELD.add(self)

    def _forget_in_child(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def release(self) -> None:
        _HELD.discard(self)
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


# A forked child (a data-loader worker) shares a held lock through its copy of the descriptor: after a kill -9
# of the parent the lock would stay held until the child noticed and exited, refusing an immediate resume. The
# child closes its copies (no LOCK_UN: that would unlock the parent too). One hook for the process and the set
# of locks held now, not one hook per lock: at-fork hooks cannot be unregistered, so a hook per lock would keep
# every lock ever taken alive (a held lock stays in the set until ``release``, even if its object is dropped).
_HELD: set[SaveLock] = set()


def _close_held_locks_in_child() -> None:
    for lock in _HELD:
        lock._forget_in_child()
    _HELD.clear()


os.register_at_fork(after_in_child=_close_held_locks_in_child)


def lock_save_dir(save_dir: str | os.PathLike | None, rank: int) -> SaveLock | None:
    """Collective: rank 0 takes the lock of ``save_dir``; when it is held elsewhere every rank raises
    ``SaveDirLocked`` (a rank that went on alone would hang in the first collective)."""
    if not save_dir:
        return None
    lock, refusal = SaveLock(save_dir), None
    if rank == 0:
        try:
            lock.acquire()
        except SaveDirLocked as e:
            refusal = str(e)
        except OSError as e:  # e.g. no permission to create the directory: every rank must hear of it
            refusal = f"--save {save_dir}: cannot create {lock.path} ({e.strerror})"
    if dist.is_initialized() and dist.get_world_size() > 1:
        box = [refusal]
        dist.broadcast_object_list(box, src=0)
        refusal = box[0]
    if refusal:
        raise SaveDirLocked(refusal)
    return lock if rank == 0 else None
