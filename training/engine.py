"""One small training-engine interface over DeepSpeed or plain PyTorch.

The loop only ever calls::

    out = engine(*inputs)          # forward (autocast to bf16 when asked)
    engine.backward(loss)          # one micro-batch
    result = engine.step(lr)       # applies the update at the accumulation boundary only
    engine.save(dir, tag, client) / engine.load(dir, tag)

``DeepSpeedEngine`` delegates to ``deepspeed.initialize`` (ZeRO 0-3, bf16/fp16 with dynamic loss scaling,
gradient accumulation and clipping from the JSON). ``TorchEngine`` is the same contract without DeepSpeed:
AdamW, data-parallel gradient averaging over the given group, tensor-parallel-aware clipping and bf16
autocast. Both write DeepSpeed's native checkpoint layout (``<dir>/<tag>/mp_rank_XX_model_states.pt`` with
the weights under ``module``), so checkpoints move freely between the two.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from training.checkpoint import model_states_name

if TYPE_CHECKING:
    from mpu.initialize import ParallelState


@dataclass
class StepResult:
    applied: bool  # an optimizer update happened (accumulation boundary and no fp16 overflow)
    boundary: bool  # this micro-step closed an accumulation window
    grad_norm: float | None = None
    loss_scale: float | None = None


def _optimizer_state_to_load(load_dir: str, tag: str, load_optimizer: bool) -> bool:
    """Whether to ask for the optimizer state: not when ``meta.json`` says the checkpoint has none.

    ``tools/change_mp.py`` drops the optimizer state (it cannot be resharded) and records
    ``optimizer_state: false``; asking DeepSpeed for it anyway fails (ZeRO 0: ``None`` given to the
    optimizer; ZeRO >= 1: missing ``*optim_states.pt`` files). The run resumes with fresh optimizer
    moments, which is logged because the resume is then not exact."""
    if not load_optimizer:
        return False
    from training.checkpoint import META

    meta = os.path.join(load_dir, tag, META)
    if not os.path.isfile(meta):
        return True
    with open(meta, encoding="utf-8") as f:
        if json.load(f).get("optimizer_state", True) is not False:
            return True
    logging.getLogger("mglm").warning(
        "%s holds no optimizer state (resharded by tools/change_mp.py): resuming with a fresh optimizer",
        os.path.join(load_dir, tag))
    return False


class TorchEngine:
    """Plain PyTorch: AdamW, gradient accumulation, DP all-reduce, TP-aware clipping, bf16 autocast."""

    def __init__(self, module: torch.nn.Module, param_groups: list[dict], parallel_state: ParallelState, *, lr: float,
                 betas=(0.9, 0.98), eps: float = 1e-6, clip_grad: float = 1.0, grad_accum: int = 1,
                 bf16: bool = False, device: torch.device | None = None):
        self.module = module
        self.parallel_state = parallel_state
        self.clip_grad = clip_grad
        self.grad_accum = grad_accum
        self.bf16 = bf16
        self.device = device or torch.device("cpu")
        # One fused kernel for all parameters on CUDA (same AdamW math); elsewhere torch's default loop.
        fused = all(p.is_cuda for g in param_groups for p in g["params"]) or None
        self.optimizer = torch.optim.AdamW(param_groups, lr=lr, betas=tuple(betas), eps=eps, fused=fused)
        self.micro_step = 0
        self.global_steps = 0

    def __call__(self, *args, **kwargs):
        ctx = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        with ctx:
            return self.module(*args, **kwargs)

    def train(self) -> None:
        self.module.train()

    def eval(self) -> None:
        self.module.eval()

    def backward(self, loss: torch.Tensor) -> None:
        (loss / self.grad_accum).backward()

    def step(self, lr: float) -> StepResult:
        from mpu.grads import clip_grad_norm

        self.micro_step += 1
        if self.micro_step % self.grad_accum != 0:
            return StepResult(applied=False, boundary=False)
        params = [p for p in self.module.parameters() if p.requires_grad]
        if self.parallel_state.dp_size > 1:
            # Average over data-parallel replicas; one flat buffer keeps it to a single collective.
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat, group=self.parallel_state.dp_group)
            flat /= self.parallel_state.dp_size
            offset = 0
            for p, g in zip(params, grads, strict=True):
                n = g.numel()
                p.grad = flat[offset:offset + n].view_as(p).clone()
                offset += n
        norm = clip_grad_norm(params, self.clip_grad if self.clip_grad > 0 else float("inf"), self.parallel_state)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_steps += 1
        return StepResult(applied=True, boundary=True, grad_norm=float(norm))

    # ----------------------------------------------------------------------------------- checkpoints
    def save(self, save_dir: str, tag: str, client_state: dict) -> None:
        path = os.path.join(save_dir, tag)
        os.makedirs(path, exist_ok=True)
        if self.parallel_state.dp_rank == 0:  # replicas hold identical weights and optimizer state
            state = {
                "module": self.module.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "global_steps": self.global_steps,
                "mp_world_size": self.parallel_state.tp_size,
                "dp_world_size": self.parallel_state.dp_size,
                **client_state,
            }
            torch.save(state, os.path.join(path, model_states_name(self.parallel_state.tp_rank)))

    def load(self, load_dir: str, tag: str, load_optimizer: bool = True, *, trust: bool = False) -> dict:
        """``trust``: ``--trust-checkpoint`` (the file may need more than a weights-only load allows)."""
        from common import safe_load

        load_optimizer = _optimizer_state_to_load(load_dir, tag, load_optimizer)
        path = os.path.join(load_dir, tag, model_states_name(self.parallel_state.tp_rank))
        state = safe_load.load(path, trust=trust, what="--load")
        self.module.load_state_dict(state["module"], strict=True)
        if load_optimizer and state.get("optimizer") is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        self.global_steps = int(state.get("global_steps", 0))
        self.micro_step = self.global_steps * self.grad_accum
        return state


class DeepSpeedEngine:
    """``deepspeed.initialize`` behind the engine contract; the JSON drives ZeRO, precision, accumulation."""

    def __init__(self, module: torch.nn.Module, param_groups: list[dict], parallel_state: ParallelState, ds_config: dict):
        import deepspeed

        from training.distributed import skip_deepspeed_shm_build

        skip_deepspeed_shm_build()
        self.parallel_state = parallel_state
        self.ds_config = ds_config
        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=module, model_parameters=param_groups, config=ds_config, mpu=parallel_state,
            dist_init_required=False,
        )
        self.module = self.engine.module
        self.grad_accum = self.engine.gradient_accumulation_steps()
        undo_wrapper_construction_step(self.optimizer)

    def __call__(self, *args, **kwargs):
        return self.engine(*args, **kwargs)

    def train(self) -> None:
        self.engine.train()

    def eval(self) -> None:
        self.engine.eval()

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss)

    def step(self, lr: float) -> StepResult:
        boundary = self.engine.is_gradient_accumulation_boundary()
        if boundary:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        skipped_before = self.engine.skipped_steps
        self.engine.step()
        if not boundary:
            return StepResult(applied=False, boundary=False)
        applied = self.engine.skipped_steps == skipped_before
        norm = self.engine.get_global_grad_norm()
        scale = getattr(self.optimizer, "cur_scale", None) if self.engine.fp16_enabled() else None
        return StepResult(applied=applied, boundary=True,
                          grad_norm=None if norm is None else float(norm),
                          loss_scale=None if scale is None else float(scale))

    @property
    def global_steps(self) -> int:
        return self.engine.global_steps

    def save(self, save_dir: str, tag: str, client_state: dict) -> None:
        self.engine.save_checkpoint(save_dir, tag=tag, client_state=client_state, save_latest=False)

    def load(self, load_dir: str, tag: str, load_optimizer: bool = True, *, trust: bool = False) -> dict:
        """DeepSpeed reads the files through its checkpoint-engine hook, which ``deepspeed_engine_loads``
        points at our weights-only loader for this call (``trust``: ``--trust-checkpoint``)."""
        from common import safe_load

        load_optimizer = _optimizer_state_to_load(load_dir, tag, load_optimizer)
        with safe_load.deepspeed_engine_loads(self.engine, trust):
            path, client_state = self.engine.load_checkpoint(
                load_dir, tag=tag, load_optimizer_states=load_optimizer, load_lr_scheduler_states=False,
                load_module_strict=True,
            )
        if path is None:
            raise FileNotFoundError(f"DeepSpeed could not load checkpoint {os.path.join(load_dir, tag)}")
        return client_state or {}


def undo_wrapper_construction_step(optimizer) -> bool:
    """Undo the optimizer step DeepSpeed's ZeRO-0 bf16 wrapper takes while being built.

    Without ZeRO, DeepSpeed (0.19) wraps a bf16 model in ``FP16_Optimizer`` (over FusedAdam) or
    ``FP16_UnfusedOptimizer`` (over any other optimizer, e.g. torch AdamW); both "initialise the optimizer
    states" by calling the inner ``step()`` once with all-zero gradients. For decoupled AdamW that step is
    not a no-op: it shrinks every fp32 master weight of a decayed group by ``1 - lr_json * weight_decay``
    (0.9 at lr 1, decay 0.1) while the bf16 model weights keep their values, and it advances Adam's step
    count t by one, so every later bias correction uses t + 1 (at betas 0.9/0.98 the first real update is
    ~0.74 lr instead of lr). ZeRO 1-3 and BF16_Optimizer create their state lazily and are untouched.

    The masters were cloned from the bf16 weights, which that step did not change, so copying those back
    restores the masters exactly; clearing the inner optimizer's per-parameter state lets it start at
    t = 0 on the first real step (torch AdamW and FusedAdam both create it lazily).
    fp16 (GPU only) goes through the same wrappers and has the same defect; it is left as DeepSpeed
    builds it because no test here can run it. Returns whether ``optimizer`` was reset.
    """
    from deepspeed.runtime.fp16.fused_optimizer import FP16_Optimizer
    from deepspeed.runtime.fp16.unfused_optimizer import FP16_UnfusedOptimizer

    if not isinstance(optimizer, FP16_Optimizer | FP16_UnfusedOptimizer):
        return False
    if optimizer.low_precision_dtype != torch.bfloat16:
        return False
    with torch.no_grad():
        if isinstance(optimizer, FP16_Optimizer):
            for master_flat, low_flat in zip(optimizer.fp32_groups_flat, optimizer.fp16_groups_flat, strict=True):
                master_flat.copy_(low_flat)  # the model's parameters are views into fp16_groups_flat
        else:
            for masters, lows in zip(optimizer.fp32_groups, optimizer.fp16_groups, strict=True):
                for master, low in zip(masters, lows, strict=True):
                    master.copy_(low)
    optimizer.optimizer.state.clear()
    return True


def adjust_ds_config_for_cpu(ds_config: dict[str, Any]) -> dict[str, Any]:
    """On CPU, use torch's AdamW inside DeepSpeed (identical math) instead of FusedAdam, whose op would be
    JIT-compiled on first use (~40 s on a fresh machine)."""
    if torch.cuda.is_available():
        return ds_config
    opt = ds_config.get("optimizer")
    if opt and opt.get("type", "").lower() in ("adam", "adamw"):
        params = opt.setdefault("params", {})
        params.setdefault("torch_adam", True)
    return ds_config


def build_engine(model: torch.nn.Module, param_groups: list[dict], parallel_state: ParallelState, optim, train,
                 ds_config: dict[str, Any] | None, device: torch.device):
    """The engine an entry script asks for: DeepSpeed when ``train.deepspeed`` (the JSON completed from our
    flags where it is silent; ``merge_deepspeed_config`` already refused disagreements), else TorchEngine.

    ``optim``/``train``: ``training.arguments.OptimArgs`` / ``TrainArgs``.
    """
    if train.deepspeed:
        ds = dict(ds_config or {})
        ds.setdefault("train_micro_batch_size_per_gpu", train.batch_size)
        ds.setdefault("gradient_accumulation_steps", train.gradient_accumulation_steps)
        ds.setdefault("gradient_clipping", optim.clip_grad)
        ds.setdefault("optimizer", {"type": "AdamW", "params": {}})
        ds["optimizer"] = dict(ds["optimizer"])
        ds["optimizer"]["params"] = dict(ds["optimizer"].get("params", {}))
        for k, v in (("lr", optim.lr), ("weight_decay", optim.weight_decay),
                     ("betas", [optim.adam_beta1, optim.adam_beta2]), ("eps", optim.adam_eps)):
            ds["optimizer"]["params"].setdefault(k, v)
        ds = adjust_ds_config_for_cpu(ds)  # after the default optimizer exists (it is the usual case)
        ds.setdefault("steps_per_print", 10**9)
        want = ds["train_micro_batch_size_per_gpu"] * ds["gradient_accumulation_steps"] * parallel_state.dp_size
        if "train_batch_size" in ds and int(ds["train_batch_size"]) != want:
            raise ValueError(
                f"train_batch_size = {ds['train_batch_size']} in the DeepSpeed JSON, but micro-batch "
                f"{ds['train_micro_batch_size_per_gpu']} x gradient accumulation {ds['gradient_accumulation_steps']}"
                f" x data-parallel size {parallel_state.dp_size} = {want}; remove it from the JSON or make them agree")
        engine = DeepSpeedEngine(model, param_groups, parallel_state, ds)
    else:
        engine = TorchEngine(model, param_groups, parallel_state, lr=optim.lr,
                             betas=(optim.adam_beta1, optim.adam_beta2), eps=optim.adam_eps,
                             clip_grad=optim.clip_grad, grad_accum=train.gradient_accumulation_steps,
                             bf16=train.bf16, device=device)
    return engine
