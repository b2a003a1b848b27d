"""Distributed start-up for every launcher: ``deepspeed``, ``torchrun``, or one plain process.

Launchers pass the rendezvous through the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``); the old ``--local_rank`` flag of the deepspeed launcher is accepted too.
A plain ``python pretrain_glm.py`` gets a one-process group on an in-memory store (no port), so the same
code path (and the same checkpoints) serve a laptop and a cluster. The backend is NCCL when CUDA is available and
gloo otherwise.
"""

from __future__ import annotations

import datetime
import importlib
import logging
import os
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

if TYPE_CHECKING:
    from mpu.initialize import ParallelState


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: torch.device


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env_int(name: str, default: int) -> int:
    v = os.environ.get(name)
    if v is None or v == "":
        return default
    try:
        return int(v)
    except ValueError:
        raise ValueError(f"environment variable {name}={v!r}: expected an integer") from None


def init_distributed(local_rank: int | None = None, backend: str | None = None, device: str | None = None,
                     timeout_minutes: int = 30) -> DistInfo:
    """Initialise ``torch.distributed`` once (idempotent) and pick this process's device."""
    rank = _env_int("RANK", 0)
    world = _env_int("WORLD_SIZE", 1)
    if local_rank is None or local_rank < 0:
        local_rank = _env_int("LOCAL_RANK", 0)
    # DeepSpeed insists on LOCAL_RANK even after the group exists; a plain process needs a rendezvous.
    os.environ.setdefault("LOCAL_RANK", str(local_rank))
    os.environ.setdefault("RANK", str(rank))
    os.environ.setdefault("WORLD_SIZE", str(world))
    # A lone process needs no rendezvous: an in-memory store avoids racing other jobs for a port, even
    # when MASTER_PORT leaks in from a parent's environment (a port someone else may hold). Nothing is
    # written to os.environ for it, so child processes inherit no stale rendezvous address.
    single = world == 1
    if not single and "MASTER_PORT" not in os.environ:
        raise ValueError("WORLD_SIZE > 1 but MASTER_PORT is not set: start multi-process runs with deepspeed or torchrun")
    if not single:
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")

    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        dev = torch.device("cuda", torch.cuda.current_device())
    else:
        dev = torch.device("cpu")
    backend = backend or ("nccl" if use_cuda else "gloo")
    if not dist.is_initialized():
        timeout = datetime.timedelta(minutes=timeout_minutes)
        if single:
            dist.init_process_group(backend=backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)
        else:
            dist.init_process_group(backend=backend, rank=rank, world_size=world, timeout=timeout)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, dist.get_backend(), dev)


@dataclass(frozen=True)
class RunContext:
    """What every entry point starts with: the process group, the TP x DP layout and the rank-0 logger."""

    info: DistInfo
    parallel_state: ParallelState
    log: logging.Logger


def start_run(train_args, what: str) -> RunContext:
    """Common start of ``pretrain_glm.py`` / ``finetune_glm.py``: ``init_distributed``, TP x DP groups
    (``--model-parallel-size`` must divide the world size), the logger and one line describing the run,
    and the seeds (torch, numpy, and the model-parallel RNG tracker: dropout differs across TP ranks)."""
    import numpy as np

    from mpu.initialize import ParallelState
    from mpu.random import model_parallel_seed
    from training.logging import get_logger

    t = train_args
    info = init_distributed(t.local_rank, device=t.device)
    try:
        if info.world_size % t.model_parallel_size:
            raise ValueError(f"--model-parallel-size {t.model_parallel_size} does not divide the world size "
                             f"{info.world_size}")
        parallel_state = ParallelState.from_torch_distributed(t.model_parallel_size)
    except BaseException:
        shutdown()
        raise
    log = get_logger(info.rank)
    log.info(f"{what}: world {info.world_size} = TP {parallel_state.tp_size} x DP {parallel_state.dp_size}, "
             f"backend {info.backend}, device {info.device}, engine {'deepspeed' if t.deepspeed else 'torch'}")
    torch.manual_seed(t.seed)
    np.random.seed(t.seed)
    model_parallel_seed(t.seed, parallel_state)
    return RunContext(info, parallel_state, log)


def skip_deepspeed_shm_build() -> None:
    """On CPU, DeepSpeed JIT-compiles a shared-memory all-reduce op at its first init (25-55 s on a fresh
    machine). Our collectives go through torch.distributed, so the op buys nothing; skip building it
    unless MGLM_DS_SHM=1."""
    if os.environ.get("MGLM_DS_SHM") == "1" or torch.cuda.is_available():
        return
    # `import deepspeed.comm.torch as m` would bind the torch package re-exported there, not the module.
    importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None


def shutdown() -> None:
    """Barrier + destroy: without it torchrun runs exit flakily (SIGABRT after finishing)."""
    if dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()
