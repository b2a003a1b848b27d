"""Typed run configuration and its argparse front end (GLM's flag names where GLM had them).

The command line is parsed once, at the edge, into frozen dataclasses; functions receive the slice they
need. Values that can be set both by a flag and by the DeepSpeed JSON (micro-batch, accumulation, lr,
weight decay, Adam betas/eps, clipping, bf16/fp16) must agree when both are given, or the run refuses to
start naming both; a value given in only one place is taken from there.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from common.errors import ArgumentParser


@dataclass(frozen=True)
class ModelArgs:
    model_config: str | None = None  # config/model/X.json; flags below override its fields
    num_layers: int | None = None
    hidden_size: int | None = None
    num_attention_heads: int | None = None
    max_position_embeddings: int | None = None  # GLM's name for GLMConfig.max_sequence_length
    hidden_dropout: float | None = None
    attention_dropout: float | None = None
    checkpoint_activations: bool = False
    checkpoint_num_layers: int = 1
    make_vocab_size_divisible_by: int = 128


@dataclass(frozen=True)
class DataArgs:
    train_data: tuple[str, ...] = ()  # tokenized store folders (tools/preprocess_data.py output)
    valid_data: tuple[str, ...] = ()
    tokenizer_model: str | None = None  # sentencepiece .model
    seq_length: int = 512
    bert_prob: float = 0.5
    gap_sentence_prob: float = 0.3
    avg_block_length: float = 3.0
    gpt_min_ratio: float = 0.25
    gpt_infill_prob: float = 0.5
    block_mask_prob: float = 0.0  # mGLM recipe 0.1; > 0 adds [dBLOCK] to the tokenizer (N+10)
    short_seq_prob: float = 0.0  # mGLM recipe 0.02
    single_span_prob: float = 0.0
    context_mask_ratio: float = 0.0  # GLM option (mGLM: 0); > 0 adds [dBLOCK] to the tokenizer (N+10)
    dataset_temperature: float = 0.3
    num_workers: int = 1
    valid_fraction: float = 0.01  # documents held out for validation when --valid-data is not given


@dataclass(frozen=True)
class OptimArgs:
    lr: float = 1e-4
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.98
    adam_eps: float = 1e-6
    clip_grad: float = 1.0
    lr_decay_style: str = "linear"
    lr_decay_iters: int | None = None
    lr_decay_ratio: float = 0.1
    warmup: float = 0.01


@dataclass(frozen=True)
class TrainArgs:
    train_iters: int = 1000
    batch_size: int = 4  # micro-batch per data-parallel rank
    gradient_accumulation_steps: int = 1
    seed: int = 1234
    bf16: bool = False
    fp16: bool = False
    model_parallel_size: int = 1
    deepspeed: bool = False
    deepspeed_config: str | None = None
    zero_stage: int | None = None
    save: str | None = None
    load: str | None = None
    load_pretrained: str | None = None
    trust_checkpoint: bool = False  # vouch for --load/--load-pretrained files a weights-only load refuses
    no_load_optim: bool = False
    save_interval: int = 5000
    eval_interval: int = 1000
    eval_iters: int = 10
    log_interval: int = 50
    log_dir: str | None = None  # TensorBoard + metrics.jsonl; default <save>/logs
    no_tensorboard: bool = False
    experiment_name: str = "mglm"
    local_rank: int | None = None
    device: str | None = None  # "cpu" or "cuda"; default: cuda when available
    exit_signal_save: bool = True  # SIGTERM/SIGINT save a checkpoint before exiting
    compile: bool = False  # torch.compile the model (off by default: no faster on the CPU, README Benchmarks)


@dataclass(frozen=True)
class PretrainConfig:
    model: ModelArgs = field(default_factory=ModelArgs)
    data: DataArgs = field(default_factory=DataArgs)
    optim: OptimArgs = field(default_factory=OptimArgs)
    train: TrainArgs = field(default_factory=TrainArgs)
    ds_config: dict[str, Any] | None = None  # the resolved DeepSpeed JSON (None without --deepspeed)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------- argparse
def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


# Flags whose GLM spelling differs from the dataclass field.
_ALIASES = {"deepspeed_config": ["--deepspeed_config", "--deepspeed-config"], "local_rank": ["--local_rank", "--local-rank"]}
_HELP = {
    "model_config": "model JSON (config/model/*.json); the model flags override its fields",
    "train_data": "tokenized store folder(s) made by tools/preprocess_data.py",
    "tokenizer_model": "sentencepiece model file (default: the one recorded in the store)",
    "batch_size": "micro-batch per data-parallel rank (DeepSpeed: train_micro_batch_size_per_gpu)",
    "warmup": "warm-up steps as a fraction of the decay steps",
    "bert_prob": "probability of the [MASK] span objective per batch",
    "gap_sentence_prob": "probability of the [sMASK] sentence objective per batch (rest: [gMASK])",
    "dataset_temperature": "language sampling p_i ~ n_i^T",
    "block_mask_prob": "bert objective: each Part-B input span token becomes [dBLOCK] with this probability "
                       "(> 0 builds the tokenizer with [dBLOCK] at N+10, recorded in checkpoints; mGLM 0.1)",
    "short_seq_prob": "per batch: cut every sample into (seq_length-1)//t [CLS]-prefixed pieces, t uniform in "
                      "[min(32, (seq_length-1)//4), seq_length-1); the batch grows by that factor (mGLM 0.02)",
    "single_span_prob": "per batch: the bert objective with a single Poisson-length span per sample",
    "context_mask_ratio": "bert objective: this fraction of each sample's tokens becomes [dBLOCK] in Part A, drawn "
                          "among the tokens within 3 of a mask token (> 0 builds the tokenizer with [dBLOCK])",
    "deepspeed_config": "DeepSpeed JSON (ZeRO stage, precision, optimizer, clipping)",
    "load": "resume exactly from a checkpoint (directory with 'latest', or one tag directory)",
    "load_pretrained": "initialise weights only: our checkpoint, a GLM/SAT layout checkpoint, a released .pt file or a Hugging Face hub folder (config.json; model config and tokenizer from it)",
    "trust_checkpoint": "you vouch for the --load / --load-pretrained files: read them with the full unpickler "
                        "(can run code) when a weights-only load refuses them",
    # model
    "num_layers": "transformer layers (overrides --model-config)",
    "hidden_size": "hidden size (overrides --model-config)",
    "num_attention_heads": "attention heads; divisible by --model-parallel-size (overrides --model-config)",
    "max_position_embeddings": "position-embedding rows = longest sequence (GLMConfig.max_sequence_length; "
                               "overrides --model-config)",
    "hidden_dropout": "dropout on embeddings, attention output and MLP output (overrides --model-config)",
    "attention_dropout": "dropout on the attention probabilities (overrides --model-config)",
    "checkpoint_activations": "recompute each layer's activations in the backward pass (saves memory)",
    "checkpoint_num_layers": "layers per activation checkpoint",
    "make_vocab_size_divisible_by": "pad the embedding table to a multiple of this (times the TP size)",
    # data
    "valid_data": "tokenized store folder(s) for validation (default: the last --valid-fraction of each "
                  "language's documents in --train-data)",
    "seq_length": "tokens per training sample",
    "avg_block_length": "mean span length (Poisson lambda) of the [MASK] objective",
    "gpt_min_ratio": "[gMASK] objective: the span is at least this fraction of the shortest sample",
    "gpt_infill_prob": "[gMASK] objective: probability that the span is infilled rather than the suffix",
    "num_workers": "data-loader worker processes (batches do not depend on it)",
    "valid_fraction": "fraction of each language's documents held out for validation without --valid-data",
    # optimizer and schedule
    "lr": "peak learning rate",
    "weight_decay": "AdamW weight decay",
    "adam_beta1": "Adam beta1",
    "adam_beta2": "Adam beta2",
    "adam_eps": "Adam epsilon",
    "clip_grad": "clip the global gradient norm to this (0 = no clipping)",
    "lr_decay_style": "learning-rate decay after warm-up: linear, cosine or constant",
    "lr_decay_iters": "steps over which the learning rate decays (default: --train-iters)",
    "lr_decay_ratio": "the learning rate decays to this fraction of --lr",
    # training
    "train_iters": "optimizer steps",
    "gradient_accumulation_steps": "micro-batches per optimizer step",
    "seed": "seed of every random stream (data, dropout, initialisation)",
    "bf16": "bf16 autocast (plain engine) or DeepSpeed bf16",
    "fp16": "fp16 with dynamic loss scaling (DeepSpeed engine only)",
    "model_parallel_size": "tensor-parallel size; divides the number of processes and the attention heads",
    "deepspeed": "use the DeepSpeed engine (default: the plain torch engine)",
    "zero_stage": "ZeRO stage 0-3 (must agree with the DeepSpeed JSON when both give it)",
    "save": "checkpoint directory (default: no checkpoints)",
    "no_load_optim": "with --load: restore the weights and step but start a fresh optimizer",
    "save_interval": "save a checkpoint every N steps (and at the end)",
    "eval_interval": "validate every N steps",
    "eval_iters": "validation batches per evaluation (the same batches every time)",
    "log_interval": "one log line every N steps",
    "log_dir": "TensorBoard events and metrics.jsonl (default: <save>/logs)",
    "no_tensorboard": "write metrics.jsonl only, no TensorBoard events",
    "experiment_name": "run name, recorded with the configuration in each checkpoint's meta.json",
    "local_rank": "set by the deepspeed launcher (default: $LOCAL_RANK)",
    "device": "cpu or cuda (default: cuda when available)",
    "compile": "torch.compile the model (compiles on the first steps; measured no faster on a CPU)",
    "exit_signal_save": "SIGTERM/SIGINT save a checkpoint at the end of the current step before exiting "
                        "(on by default)",
}


def with_default(text: str, default: Any) -> str:
    """A flag's help line with its default appended, unless the text already states it. ``None``,
    ``False`` and empty values mean "not set" and are not shown (argparse's
    ArgumentDefaultsHelpFormatter would print "(default: None)")."""
    if default is None or default is False or default in ((), [], "") or "default" in text:
        return text
    return f"{text} (default: {'on' if default is True else default})"


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """``--help`` shows each flag's default after its help text (see ``with_default``)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        switch = action.nargs == 0  # store_true / store_false: the flag's text says what it turns on or off
        hidden = action.default is argparse.SUPPRESS or not action.option_strings or switch
        default = None if hidden else action.default
        return with_default(action.help or "", default)


def _help_text(name: str, default: Any, helps: dict[str, str]) -> str:
    """The help line of a dataclass flag. argparse keeps ``default=None`` (so that the flags a user gave are
    known), which would hide the real default: it is taken from the dataclass (or the parser's own
    defaults) instead."""
    text = helps.get(name) or _HELP.get(name)
    assert text, f"flag --{name}: no help text (add it to training.arguments._HELP)"
    return with_default(text, default)


def add_dataclass_args(parser: argparse.ArgumentParser, cls, title: str, defaults: dict[str, Any] | None = None,
                       helps: dict[str, str] | None = None, skip: set[str] = frozenset(), hidden: bool = False) -> None:
    """One flag per field of ``cls`` (except ``skip``); ``defaults`` / ``helps`` replace the field's default /
    help text in ``--help`` where a parser fills other values (finetuning); ``hidden``: parsed, not listed."""
    group = parser.add_argument_group(title)
    for f in fields(cls):
        if f.name in skip:
            continue
        names = _ALIASES.get(f.name, [_flag(f.name)])
        default = (defaults or {}).get(f.name, f.default if f.default is not MISSING else f.default_factory())
        text = argparse.SUPPRESS if hidden else _help_text(f.name, default, helps or {})
        kw: dict[str, Any] = {"dest": f.name, "default": None, "help": text}
        t = f.type if isinstance(f.type, str) else f.type.__name__
        if t == "bool":
            kw["action"] = "store_true"
        elif t.startswith("tuple"):
            kw["nargs"] = "+"
        elif "int" in t and "float" not in t:
            kw["type"] = int
            kw["metavar"] = "N"
        elif "float" in t:
            kw["type"] = float
            kw["metavar"] = "X"
        group.add_argument(*names, **kw)


def build_parser(description: str = "mglm pretraining") -> argparse.ArgumentParser:
    p = ArgumentParser(description=description, allow_abbrev=False)
    add_dataclass_args(p, ModelArgs, "model")
    add_dataclass_args(p, DataArgs, "data")
    add_dataclass_args(p, OptimArgs, "optimizer and schedule")
    add_dataclass_args(p, TrainArgs, "training")
    return p


def _take(cls, ns: argparse.Namespace, overrides: dict[str, Any] | None = None):
    kw = {}
    for f in fields(cls):
        v = getattr(ns, f.name, None)
        if overrides and f.name in overrides and overrides[f.name] is not None:
            v = overrides[f.name]
        if v is None or v is False:
            continue
        kw[f.name] = tuple(v) if isinstance(v, list) else v
    return cls(**kw)


# ------------------------------------------------------------------------------ DeepSpeed merging
# flag name -> (path in the DeepSpeed JSON, how to compare)
_DS_KEYS = {
    "batch_size": ("train_micro_batch_size_per_gpu",),
    "gradient_accumulation_steps": ("gradient_accumulation_steps",),
    "clip_grad": ("gradient_clipping",),
    "lr": ("optimizer", "params", "lr"),
    "weight_decay": ("optimizer", "params", "weight_decay"),
    "adam_eps": ("optimizer", "params", "eps"),
    "zero_stage": ("zero_optimization", "stage"),
    "bf16": ("bf16", "enabled"),
    "fp16": ("fp16", "enabled"),
}


def _get(d: dict, path: tuple[str, ...]):
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _set(d: dict, path: tuple[str, ...], value) -> None:
    for k in path[:-1]:
        d = d.setdefault(k, {})
    d[path[-1]] = value


def merge_deepspeed_config(ns: argparse.Namespace, ds_path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read the DeepSpeed JSON, check it against explicitly given flags, and fill each side from the other.

    Returns (values to use for our flags, the resolved DeepSpeed config)."""
    path = Path(ds_path)
    if not path.is_file():
        raise FileNotFoundError(f"--deepspeed_config {path}: file not found")
    from common.errors import read_json_object

    ds = read_json_object(path, "DeepSpeed config")
    if "scheduler" in ds:
        raise ValueError(f"{path}: remove the 'scheduler' block; mglm sets the learning rate itself "
                         "(--lr, --warmup, --lr-decay-style, --lr-decay-iters, --lr-decay-ratio)")
    ours: dict[str, Any] = {}
    for name, key in _DS_KEYS.items():
        flag_v = getattr(ns, name, None)
        json_v = _get(ds, key)
        if name in ("bf16", "fp16") and flag_v is False:
            flag_v = None  # store_true flags that were not given
        if flag_v is not None and json_v is not None and not _same(flag_v, json_v):
            raise ValueError(f"{_flag(name)} {flag_v} contradicts {'.'.join(key)} = {json_v} in {path}; "
                             "set it in one place or make them agree")
        if json_v is not None:
            ours[name] = json_v
        elif flag_v is not None and (name not in ("lr", "weight_decay", "adam_eps") or "optimizer" in ds):
            _set(ds, key, flag_v)
    betas = _get(ds, ("optimizer", "params", "betas"))
    if betas is not None:
        for i, name in enumerate(("adam_beta1", "adam_beta2")):
            v = getattr(ns, name, None)
            if v is not None and not _same(v, betas[i]):
                raise ValueError(f"{_flag(name)} {v} contradicts optimizer.params.betas[{i}] = {betas[i]} in {path}")
            ours[name] = betas[i]
    if ds.get("fp16", {}).get("enabled") and ds.get("bf16", {}).get("enabled"):
        raise ValueError(f"{path}: fp16 and bf16 are both enabled; choose one")
    return ours, ds


def _same(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return bool(a) == bool(b)
    return abs(float(a) - float(b)) <= 1e-12 * max(1.0, abs(float(a)))


def _deepspeed_json(ns: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """With ``--deepspeed_config``: the values the JSON sets (checked against the flags) and the JSON itself."""
    if not (ns.deepspeed or ns.deepspeed_config):
        return {}, None
    if not ns.deepspeed_config:
        raise ValueError("--deepspeed needs --deepspeed_config FILE.json")
    ns.deepspeed = True
    return merge_deepspeed_config(ns, ns.deepspeed_config)


def parse_pretrain_args(argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None) -> PretrainConfig:
    parser = parser or build_parser()
    ns = parser.parse_args(argv)
    overrides, ds = _deepspeed_json(ns)
    cfg = PretrainConfig(
        model=_take(ModelArgs, ns), data=_take(DataArgs, ns),
        optim=_take(OptimArgs, ns, overrides), train=_take(TrainArgs, ns, overrides), ds_config=ds,
    )
    validate(cfg)
    return cfg


def validate(cfg: PretrainConfig) -> None:
    t, d, o = cfg.train, cfg.data, cfg.optim
    if t.bf16 and t.fp16:
        raise ValueError("--bf16 and --fp16 are exclusive")
    if t.fp16 and not t.deepspeed:
        raise ValueError("--fp16 needs DeepSpeed (dynamic loss scaling); use --bf16 with the plain torch engine")
    for name in ("train_iters", "batch_size", "gradient_accumulation_steps", "model_parallel_size", "log_interval",
                 "save_interval", "eval_interval"):
        if getattr(t, name) < 1:
            raise ValueError(f"{_flag(name)} {getattr(t, name)}: expected >= 1")
    if d.bert_prob < 0 or d.gap_sentence_prob < 0 or d.bert_prob + d.gap_sentence_prob > 1:
        raise ValueError(f"--bert-prob {d.bert_prob} + --gap-sentence-prob {d.gap_sentence_prob} must be within [0, 1]")
    for name in ("block_mask_prob", "short_seq_prob", "single_span_prob", "context_mask_ratio", "gpt_infill_prob",
                 "gpt_min_ratio"):
        v = getattr(d, name)
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{_flag(name)} {v}: expected a probability in [0, 1]")
    if d.seq_length < 8:
        raise ValueError(f"--seq-length {d.seq_length}: expected >= 8")
    if o.lr <= 0:
        raise ValueError(f"--lr {o.lr}: expected > 0")
    for p in d.train_data:
        if not os.path.exists(p):
            raise FileNotFoundError(f"--train-data {p}: no such store (make one with tools/preprocess_data.py)")
    if cfg.model.model_config and not os.path.isfile(cfg.model.model_config):
        raise FileNotFoundError(f"--model-config {cfg.model.model_config}: file not found")



# ------------------------------------------------------------------------------------- finetuning
@dataclass(frozen=True)
class FinetuneArgs:
    """The finetuning flags every task shares; a task's own options are its ``options_cls`` (``tasks/``)."""

    task: str | None = None  # tasks/registry.py name (xnli, pawsx, ...)
    data_dir: str | None = None  # the task's data folder (official or XTREME layout)
    tokenizer_model: str | None = None  # default: the tokenizer recorded by a --load-pretrained checkpoint
    seq_length: int = 256
    epochs: int = 10  # train_iters = epochs * steps per epoch unless --train-iters is given; 0 = evaluate only
    pattern_id: int | None = None  # default: the task's (XNLI 4, PAWS-X 0)
    eval_batch_size: int | None = None  # default: --batch-size
    eval_epoch: int = 1  # evaluate on dev every this many epochs (unless --eval-interval steps is given)
    select_on: str | None = None  # <lang>-dev | avg-dev | all-dev (mGLM); default en-dev, else the 1st language's
    languages: tuple[str, ...] = ()  # dev/test languages; default every language present in --data-dir
    overwrite: bool = False  # replace an existing results.json
    eval_limit: int | None = None  # smoke runs: only the first N dev/test examples of each language
    num_workers: int = 0


@dataclass(frozen=True)
class FinetuneConfig:
    model: ModelArgs = field(default_factory=ModelArgs)
    optim: OptimArgs = field(default_factory=OptimArgs)
    train: TrainArgs = field(default_factory=TrainArgs)
    finetune: FinetuneArgs = field(default_factory=FinetuneArgs)
    task_options: Any = None  # the task's own options (an instance of its options_cls), None without any
    ds_config: dict[str, Any] | None = None
    given: tuple[str, ...] = ()  # flags given explicitly (train_iters, eval_interval, save_interval ...)

    def to_dict(self) -> dict[str, Any]:
        """The configuration as recorded in meta.json: the task's options sit beside the shared ones."""
        d = asdict(self)
        if self.task_options is not None:
            d["finetune"] = {**d["finetune"], **asdict(self.task_options)}
        d.pop("task_options")
        return d

    def as_pretrain(self) -> PretrainConfig:
        """The pretraining view (shared validation and model-config building)."""
        f = self.finetune
        return PretrainConfig(model=self.model, data=DataArgs(tokenizer_model=f.tokenizer_model, seq_length=f.seq_length),
                              optim=self.optim, train=self.train, ds_config=self.ds_config)


_HELP.update({
    "data_dir": "the task's data folder (official distribution or XTREME layout)",
    "epochs": "training epochs; train_iters = epochs x steps per epoch unless --train-iters; 0 = evaluate only",
    "select_on": "model selection: <lang>-dev, avg-dev, all-dev (pooled over languages, mGLM); default en-dev "
                 "when a labelled English dev set exists, else the first --languages (or first read) language's",
    "languages": "dev/test languages (default: every language present)",
    "eval_epoch": "evaluate on dev every N epochs (unless --eval-interval is given)",
    "eval_limit": "smoke runs: score only the first N dev/test examples of each language (results say so)",
})

# Flags whose meaning in finetuning differs from pretraining's _HELP entry of the same name.
_FINETUNE_HELP = {
    "tokenizer_model": "sentencepiece model file (default: the one recorded by the --load-pretrained checkpoint)",
    "seq_length": "tokens per sample (generation tasks: the source length)",
    "num_workers": "data-loader worker processes",
    "pattern_id": "cloze pattern (default: the task's; XNLI 4, PAWS-X 0)",
    "eval_batch_size": "batch size of dev/test scoring (default: --batch-size)",
    "overwrite": "replace an existing results.json in --save",
    "train_iters": "optimizer steps (default: --epochs x steps per epoch)",
    "eval_interval": "score the dev sets every N steps (default: every --eval-epoch epochs)",
    "save_interval": "save a checkpoint every N steps (default: only the best model and the end)",
}

# Finetuning defaults that differ from pretraining (GLM's finetune defaults: linear decay to 0).
_FINETUNE_DEFAULTS = {"lr_decay_ratio": 0.0, "warmup": 0.0, "lr": 1e-5, "weight_decay": 0.0,
                      "adam_beta2": 0.999, "adam_eps": 1e-8, "clip_grad": 1.0, "log_interval": 10}


def build_finetune_parser(task_help: str, options: Sequence[type] = (), hidden: Sequence[type] = (),
                          epilog: str | None = None) -> argparse.ArgumentParser:
    """The shared finetuning flags, then one group per class in ``options`` (a task's own options, shown in
    ``--help``) and, without help lines, the flags of ``hidden`` (the other tasks' options: parsed so that
    the caller can refuse them by name instead of argparse's bare "unrecognized arguments")."""
    p = ArgumentParser(description="mglm finetuning", allow_abbrev=False, epilog=epilog,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_args(p, ModelArgs, "model")
    add_dataclass_args(p, OptimArgs, "optimizer and schedule", _FINETUNE_DEFAULTS)
    add_dataclass_args(p, TrainArgs, "training", _FINETUNE_DEFAULTS, _FINETUNE_HELP)
    add_dataclass_args(p, FinetuneArgs, "finetuning", helps={**_FINETUNE_HELP, "task": task_help})
    done = {f.name for cls in options for f in fields(cls)}
    for cls in options:
        add_dataclass_args(p, cls, cls.TITLE, helps=cls.HELP)
    for cls in hidden:
        add_dataclass_args(p, cls, "", skip=done, hidden=True)
        done |= {f.name for f in fields(cls)}
    return p


def finetune_config(ns: argparse.Namespace, options_cls: type | None, flag_defaults: dict[str, Any]) -> FinetuneConfig:
    """The FinetuneConfig of a parsed command line: the DeepSpeed JSON merged, the finetuning defaults, then
    the task's ``flag_defaults`` for flags not given; the shared flags validated (the task validates its own
    options: ``options_cls.validate``)."""
    given = tuple(k for k, v in vars(ns).items() if v is not None and v is not False)
    overrides, ds = _deepspeed_json(ns)
    for k, v in _FINETUNE_DEFAULTS.items():
        if getattr(ns, k) is None and k not in overrides:
            setattr(ns, k, v)
    if ds is not None and "optimizer" in ds:  # fill the JSON's optimizer from the finetune defaults too
        params = ds["optimizer"].setdefault("params", {})
        for k, key in (("lr", "lr"), ("weight_decay", "weight_decay"), ("adam_eps", "eps")):
            params.setdefault(key, getattr(ns, k))
    for k, v in flag_defaults.items():  # the task's own defaults (e.g. NCLS decoding) for flags not given
        if getattr(ns, k, None) is None:
            setattr(ns, k, v)
    if ns.train_iters is None:
        ns.train_iters = 1  # placeholder: epochs x steps per epoch, known once the data is read
    return FinetuneConfig(model=_take(ModelArgs, ns), optim=_take(OptimArgs, ns, overrides),
                          train=_take(TrainArgs, ns, overrides), finetune=_take(FinetuneArgs, ns),
                          task_options=_take(options_cls, ns) if options_cls is not None else None, ds_config=ds,
                          given=given)


def validate_finetune(cfg: FinetuneConfig, reads_data_dir: bool = True) -> None:
    """The shared finetuning flags (``reads_data_dir``: the task reads ``--data-dir``, not files of its own)."""
    f = cfg.finetune
    if not reads_data_dir:
        pass
    elif not f.data_dir:
        raise ValueError("--data-dir DIR is required (the task's data folder)")
    elif not os.path.isdir(f.data_dir):
        raise FileNotFoundError(f"--data-dir {f.data_dir}: no such directory")
    if f.epochs < 0:
        raise ValueError(f"--epochs {f.epochs}: expected >= 0")
    if f.eval_epoch < 1:
        raise ValueError(f"--eval-epoch {f.eval_epoch}: expected >= 1")
    if f.eval_batch_size is not None and f.eval_batch_size < 1:
        raise ValueError(f"--eval-batch-size {f.eval_batch_size}: expected >= 1")
    if f.eval_limit is not None and f.eval_limit < 1:
        raise ValueError(f"--eval-limit {f.eval_limit}: expected >= 1")
    validate(cfg.as_pretrain())
