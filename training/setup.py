"""The start of a run that every entry script shares: the session (process group, lock, shutdown), the
tokenizer and embedding rows from a checkpoint's ``meta.json`` (ours or a Hugging Face hub folder) or from
flags, the model config, resuming from ``--load``, the metadata written with every checkpoint, and device
placement. ``pretrain_glm.py``, ``finetune_glm.py`` and ``generate_samples.py`` call these; none of them
repeats the blocks here, so a field added to ``meta.json`` (or a check added to resuming) reaches all three.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from common.errors import UsageError
from training import checkpoint as ckpt

if TYPE_CHECKING:
    from data_utils.tokenizer import GLMTokenizer
    from model.config import GLMConfig
    from mpu.initialize import ParallelState
    from training.arguments import TrainArgs
    from training.distributed import RunContext

REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------------- session
@contextlib.contextmanager
def run_session(train_args: TrainArgs, what: str) -> Iterator[RunContext]:
    """``start_run`` (process group, TP x DP groups, logger, seeds), then one writer per ``--save`` for the
    whole run (``lock_save_dir``); on the way out the lock is released and the process group shut down,
    also after an error."""
    from training.distributed import shutdown, start_run

    run = start_run(train_args, what)
    lock = None
    try:
        lock = ckpt.lock_save_dir(train_args.save, run.info.rank)
        yield run
    finally:
        if lock is not None:
            lock.release()
        shutdown()


def to_device(batch: dict, device: torch.device) -> dict:
    """The batch's tensors on ``device`` (non-blocking from pinned memory); other values unchanged."""
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


def peak_flops(device: torch.device) -> float:
    """Per-process peak for MFU: MGLM_PEAK_TFLOPS if set, the bf16 dense peak of known GPUs, else 0 (off)."""
    env = os.environ.get("MGLM_PEAK_TFLOPS")
    if env:
        return float(env) * 1e12
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, tflops in (("H200", 989), ("H100", 989), ("A100", 312), ("A800", 312), ("V100", 125)):
            if key in name:
                return tflops * 1e12
    return 0.0


# -------------------------------------------------------------------------------------- tokenizer
def tokenizer_path(flag: str | None, meta: dict | None, where: str) -> str:
    """``--tokenizer-model`` when given, else the file the checkpoint's ``meta.json`` records (a relative
    record is tried against the repository root too, where the bundled sample tokenizer lives)."""
    path = flag or (meta or {}).get("tokenizer")
    if not path:
        raise UsageError("--tokenizer-model FILE.model is required"
                         + (f" ({where} records no tokenizer)" if meta is not None else ""))
    if not flag and not os.path.isfile(path) and not os.path.isabs(path) and (REPO / path).is_file():
        path = str(REPO / path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--tokenizer-model {path}: file not found" if flag
                                else f"tokenizer {path} (recorded in {where}) not found; pass --tokenizer-model")
    return path


def checkpoint_tokenizer(flag: str | None, meta: dict | None, where: str) -> GLMTokenizer:
    """The tokenizer a checkpoint was trained with: a checkpoint pretrained with ``[dBLOCK]`` (N+10; meta.json
    ``tokenizer_add_dblock``) gets the same token back, so its padded vocabulary and ids are the same."""
    from data_utils.tokenizer import GLMTokenizer

    return GLMTokenizer(tokenizer_path(flag, meta, where),
                        add_dblock=bool((meta or {}).get("tokenizer_add_dblock", False)))


def vocab_rows(tokenizer: GLMTokenizer, parallel_state: ParallelState, multiple: int, *,
               resumed_meta: dict | None = None, pretrained: str | None = None, pretrained_meta: dict | None = None,
               trust: bool = False) -> int:
    """Rows of the embedding table: those a resumed run recorded; else a pretrained checkpoint's own rows
    (checked against the tokenizer before any tensor is read); else the tokenizer padded to
    ``multiple`` x TP (``training.checkpoint.embedding_rows``)."""
    if resumed_meta is not None and "model_config" in resumed_meta:
        return int(resumed_meta["model_config"]["vocab_size"])
    return ckpt.embedding_rows(tokenizer, parallel_state.tp_size, multiple, pretrained, pretrained_meta,
                               tokenizer.model_path, trust=trust)


# ------------------------------------------------------------------------------------------ resume
@dataclass(frozen=True)
class Resume:
    """The intact checkpoint ``--load`` names (``resolve_intact`` falls back from a damaged newest one)."""

    load_dir: Path
    tag: str
    meta: dict[str, Any]

    @property
    def where(self) -> Path:
        return self.load_dir / self.tag


def find_resume(load: str | None, task: str | None = None) -> Resume | None:
    """The checkpoint to resume from, verified, or None without ``--load``. With ``task`` (finetuning) it
    must be a finetune of that task (``check_finetune_of``), refused before any tensor is read."""
    if not load:
        return None
    load_dir, tag, meta = ckpt.resolve_intact(load)
    if task is not None:
        check_finetune_of(meta, task, load_dir / tag)
    return Resume(load_dir, tag, meta)


def check_finetune_of(meta: dict, task: str, where: Path) -> None:
    """``--load`` resumes a finetune of this task; refuse any other checkpoint before reading tensors.

    Our finetunes record ``"task"`` in ``meta.json`` (every version has); a pretraining checkpoint records
    none. Resuming one of those would restore its step and optimizer as if it were this run's own and train
    0 steps: its weights are what ``--load-pretrained`` is for."""
    other = meta.get("task")
    if other == task:
        return
    what = (f"a finetune of task {other!r}, not {task!r}" if other
            else "not a finetune (its meta.json names no task: a pretraining checkpoint)")
    raise ValueError(f"--load {where}: {what}; --load resumes a finetune of this task. To start finetuning "
                     f"from its weights use --load-pretrained {where}")


def resume(engine, found: Resume, model_config: GLMConfig, parallel_state: ParallelState, rank: int,
           train_args: TrainArgs) -> int:
    """Restore weights, optimizer (unless ``--no-load-optim``) and every rank's RNG state from ``found``,
    after checking that it was saved by the same model at the same TP size; returns its step."""
    t = train_args
    ckpt.check_compatible(found.meta, model_config.to_dict(), parallel_state.tp_size, f"--load {found.where}",
                          parallel_state.dp_size)
    engine.load(str(found.load_dir), found.tag, load_optimizer=not t.no_load_optim, trust=t.trust_checkpoint)
    ckpt.load_rng(found.load_dir, found.tag, rank, parallel_state.rng_tracker, trust=t.trust_checkpoint)
    return int(found.meta["step"])


def load_pretrained_weights(model, train_args: TrainArgs, parallel_state: ParallelState, log) -> None:
    """``--load-pretrained`` without ``--load``: copy the weights in before the engine exists (DeepSpeed
    copies them into its fp32 masters / ZeRO partitions)."""
    t = train_args
    if t.load_pretrained and not t.load:
        src = ckpt.load_pretrained(model, t.load_pretrained, parallel_state, trust=t.trust_checkpoint)
        log.info(f"initialised weights from {src}")


def compile_model(model, train_args: TrainArgs, log) -> None:
    """``--compile``: ``torch.compile`` the model in place, after its weights are in and before the engine
    wraps it (the state_dict keys stay the same, so checkpoints stay interchangeable with eager runs)."""
    if train_args.compile:
        log.info("--compile: the model runs under torch.compile (the first steps compile it)")
        model.compile()


def checkpoint_meta(config: dict, model_config: GLMConfig, parallel_state: ParallelState,
                    tokenizer: GLMTokenizer, seed: int, **extra: Any) -> dict[str, Any]:
    """The ``meta.json`` fields every checkpoint of a run carries (``save_checkpoint`` adds step, files and
    code version): what finetuning, generation and resuming need to rebuild the same model and tokenizer
    (``tokenizer_add_dblock`` included), plus ``extra`` (e.g. the finetune's ``task``)."""
    return {"config": config, "model_config": model_config.to_dict(), "tp_size": parallel_state.tp_size,
            "dp_size": parallel_state.dp_size, "tokenizer": tokenizer.model_path,
            "tokenizer_add_dblock": tokenizer.add_dblock, "seed": seed, **extra}


# --------------------------------------------------------------------------------- loop plumbing
def checkpoint_saver(engine, save: str | None, meta_of_step: Callable[[int], dict], parallel_state: ParallelState,
                     rank: int, log) -> Callable[[int], None] | None:
    """The loop's ``save_fn``: a checkpoint of ``engine`` under ``--save`` with ``meta_of_step(step)`` as its
    meta.json (``checkpoint_meta`` plus the data position); None without ``--save``."""
    if not save:
        return None

    def save_fn(step: int) -> None:
        path = ckpt.save_checkpoint(engine, save, step, meta_of_step(step), {"iteration": step}, rank,
                                    parallel_state.rng_tracker)
        log.info(f"saved checkpoint {path}")

    return save_fn


def metrics_writer(train_args: TrainArgs, rank: int, resumed_step: int):
    """(MetricsWriter, its folder): ``--log-dir``, else ``<save>/logs``. A run resumed at step N drops only
    the rows after N (step N is complete in checkpoint N: it was logged before it was saved)."""
    from training.logging import MetricsWriter

    t = train_args
    log_dir = t.log_dir or (str(Path(t.save) / "logs") if t.save else None)
    writer = MetricsWriter(log_dir, rank, tensorboard=not t.no_tensorboard,
                           purge_step=resumed_step + 1 if resumed_step else None)
    return writer, log_dir


def loss_record(state) -> dict[str, Any]:
    """The training losses of a finished loop (``LoopState``) as every entry script reports them."""
    losses = state.step_losses
    return {"train_loss_first": losses[0] if losses else None, "train_loss_last": losses[-1] if losses else None,
            "train_losses": losses, "history": state.history}


# -------------------------------------------------------------------------------------- generation
@dataclass(frozen=True)
class Sources:
    """Where a generation run's model comes from (``generation_sources``)."""

    model_config: dict
    tokenizer: GLMTokenizer
    weights: str
    meta: dict | None  # its meta.json (ours, or the one read from a hub folder), None for other layouts
    verified: bool = False  # --load: resolve_intact has checked the weight files against meta.json


def generation_sources(load: str | None, load_pretrained: str | None, model_config: str | None,
                       tokenizer_model: str | None) -> Sources:
    """Model config, tokenizer and weights from ``--load`` (our checkpoint's meta.json, read once) or
    ``--load-pretrained`` (a hub folder carries its config and tokenizer; other layouts need
    ``--model-config`` and ``--tokenizer-model``). ``--load`` picks its checkpoint as training's does
    (``resolve_intact``): the weight files verified, a save directory falls back from a damaged newest
    checkpoint to the newest intact one with a warning, a damaged tag directory named directly is refused."""
    from model import GLMConfig

    if bool(load) == bool(load_pretrained):
        raise ValueError("give exactly one of --load CHECKPOINT_DIR or --load-pretrained FILE")
    if load:
        load_dir, tag, meta = ckpt.resolve_intact(load, weights_only=True)
        where = load_dir / tag / "meta.json"
        if "model_config" not in meta:
            raise ValueError(f"{where}: no 'model_config' recorded")
        if model_config:
            raise ValueError("--model-config is read from meta.json with --load; use --load-pretrained to override")
        return Sources(dict(meta["model_config"]), checkpoint_tokenizer(tokenizer_model, meta, str(where)),
                       str(load_dir / tag), meta, verified=True)
    pre_meta = ckpt.pretrained_meta(load_pretrained)
    if (pre_meta or {}).get("hub_folder") and not model_config:
        # A Hugging Face hub folder carries its config.json and sentencepiece file (model.hf_compat).
        return Sources(dict(pre_meta["model_config"]), checkpoint_tokenizer(tokenizer_model, pre_meta,
                                                                            load_pretrained), load_pretrained, pre_meta)
    if not model_config or not tokenizer_model:
        raise ValueError("--load-pretrained needs --model-config and --tokenizer-model")
    return Sources(GLMConfig.from_json_file(model_config).to_dict(),
                   checkpoint_tokenizer(tokenizer_model, pre_meta, load_pretrained), load_pretrained, pre_meta)


def generation_model(src: Sources, parallel_state: ParallelState, device: torch.device, multiple: int, *,
                     load_pretrained: bool, trust: bool = False):
    """The eval-mode GLMModel of ``src`` on ``device``, dropout off. Released weights keep their own rows,
    which must be the tokenizer padded to ``multiple`` x TP (as in pretraining)."""
    from model import GLMConfig, GLMModel

    tok = src.tokenizer
    config = GLMConfig.from_dict(src.model_config, source=src.weights)
    config.hidden_dropout = config.attention_dropout = 0.0
    config.max_memory_length = 0
    if load_pretrained:
        config.vocab_size = vocab_rows(tok, parallel_state, multiple, pretrained=src.weights,
                                       pretrained_meta=src.meta, trust=trust)
    if config.vocab_size < len(tok):
        raise ValueError(f"model vocab_size={config.vocab_size} is smaller than the tokenizer {tok.model_path} "
                         f"({len(tok)} ids)")
    model = GLMModel(config, parallel_state)
    ckpt.load_pretrained(model, src.weights, parallel_state, trust=trust, verified=src.verified)
    return model.to(device).eval()


def start_generation(model_parallel_size: int, device: str | None) -> tuple[ParallelState, torch.device, int, int]:
    """(parallel state, device, rank, world size) of a generation run: one tensor-parallel group of all
    processes under torchrun, else one process; ``shutdown`` ends it when the world size is above 1."""
    from mpu.initialize import ParallelState

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        from training.distributed import init_distributed

        info = init_distributed(device=device)
        if model_parallel_size != world:
            raise ValueError(f"--model-parallel-size {model_parallel_size} must equal the number of processes "
                             f"({world}): generation runs one tensor-parallel group")
        return ParallelState.from_torch_distributed(world), info.device, info.rank, world
    if model_parallel_size != 1:
        raise ValueError("--model-parallel-size > 1 needs that many processes (torchrun --nproc_per_node)")
    return ParallelState.single(), torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu")), 0, 1
