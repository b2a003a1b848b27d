"""Device-agnostic RNG tracker and activation checkpointing.

Dropout outside tensor-parallel regions (embedding / hidden dropout) must be identical on every TP rank,
so it uses the default generator, seeded with ``seed`` everywhere. Attention-probability dropout acts on
per-rank heads and must differ across TP ranks, so it runs inside ``tracker.fork()``, which swaps in a
generator state seeded with ``seed + 2718 + tp_rank`` (GLM ``mpu/random.py``). The tracker keeps one state per
(name, device type): the CPU default generator on CPU, the current CUDA device's generator on GPU.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from mpu.initialize import ParallelState

MODEL_PARALLEL_RNG = "model-parallel-rng"
_TP_SEED_OFFSET = 2718


def _get_state(device_type: str) -> torch.Tensor:
    if device_type == "cuda":
        return torch.cuda.get_rng_state()
    return torch.get_rng_state()


def _set_state(device_type: str, state: torch.Tensor) -> None:
    if device_type == "cuda":
        torch.cuda.set_rng_state(state)
    else:
        torch.set_rng_state(state)


class RNGStatesTracker:
    """Named generator states swapped in and out of the default generator by :meth:`fork`."""

    def __init__(self) -> None:
        self.seeds: dict[str, int] = {}
        self.states: dict[tuple[str, str], torch.Tensor] = {}

    def reset(self) -> None:
        self.seeds.clear()
        self.states.clear()

    def add(self, name: str, seed: int) -> None:
        """Register ``name`` with ``seed``; the per-device state is created on first use."""
        if name in self.seeds:
            raise ValueError(f"RNG state {name!r} already exists")
        self.seeds[name] = int(seed)

    def has(self, name: str) -> bool:
        return name in self.seeds

    def get_states(self) -> dict[str, Any]:
        """Copy of seeds and states (for checkpoints and activation recompute)."""
        return {"seeds": dict(self.seeds), "states": {k: v.clone() for k, v in self.states.items()}}

    def set_states(self, snapshot: dict[str, Any]) -> None:
        self.seeds = dict(snapshot["seeds"])
        self.states = {tuple(k): v.clone() for k, v in snapshot["states"].items()}

    def _initial_state(self, name: str, device_type: str) -> torch.Tensor:
        if device_type == "cuda":
            gen = torch.Generator(device=torch.device("cuda", torch.cuda.current_device()))
        else:
            gen = torch.Generator()
        gen.manual_seed(self.seeds[name])
        return gen.get_state()

    @contextlib.contextmanager
    def fork(self, name: str = MODEL_PARALLEL_RNG, device: torch.device | str = "cpu") -> Iterator[None]:
        """Run the body with the default generator of ``device`` set to the tracked state ``name``."""
        if name not in self.seeds:
            raise ValueError(f"RNG state {name!r} is not seeded; call mpu.random.model_parallel_seed(seed, "
                             "parallel_state) before training with attention dropout")
        device_type = torch.device(device).type
        key = (name, device_type)
        if key not in self.states:
            self.states[key] = self._initial_state(name, device_type)
        saved = _get_state(device_type)
        _set_state(device_type, self.states[key])
        try:
            yield
        finally:
            self.states[key] = _get_state(device_type)
            _set_state(device_type, saved)


def model_parallel_seed(seed: int, parallel_state: ParallelState) -> None:
    """Seed the default generators with ``seed`` (shared across TP ranks) and the tracker's
    model-parallel state with ``seed + 2718 + tp_rank`` (different per TP rank)."""
    torch.manual_seed(seed)  # seeds CPU and every CUDA device
    tracker = parallel_state.rng_tracker
    tracker.reset()
    tracker.add(MODEL_PARALLEL_RNG, seed + _TP_SEED_OFFSET + parallel_state.tp_rank)


def checkpoint(fn: Callable[..., Any], *args: Any, rng_tracker: RNGStatesTracker | None = None) -> Any:
    """Activation checkpointing: run ``fn(*args)`` without storing activations, recompute in backward.

    ``torch.utils.checkpoint`` restores the default CPU/CUDA generator states on recompute; this wrapper
    also restores ``rng_tracker``'s states, so recomputed dropout masks (including the per-rank attention
    dropout) equal the forward ones.
    """
    from torch.utils.checkpoint import checkpoint as torch_checkpoint

    if rng_tracker is None:
        return torch_checkpoint(fn, *args, use_reentrant=False, preserve_rng_state=True)
    snapshot = rng_tracker.get_states()
    calls = [0]

    def run(*inner: Any) -> Any:
        calls[0] += 1
        if calls[0] == 1:
            return fn(*inner)
        # Recompute in backward: replay from the forward's starting state, then put the tracker back.
        current = rng_tracker.get_states()
        rng_tracker.set_states(snapshot)
        try:
            return fn(*inner)
        finally:
            rng_tracker.set_states(current)

    return torch_checkpoint(run, *args, use_reentrant=False, preserve_rng_state=True)
