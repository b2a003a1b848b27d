"""mT5 baseline: finetune ``MT5ForConditionalGeneration`` for (cross-lingual) summarization and score ROUGE.

    python mt5/finetune_mt5.py scisummnet simple --model google/mt5-large --data-dir data
    accelerate launch mt5/finetune_mt5.py ncls sum2zh --model /path/to/mt5-large ...

A re-implementation of Multilingual-GLM's ``mt5/finetune_mt5.py`` (reference tasks_finetune_eval.md
section 5) on Hugging Face Transformers and Accelerate: one code path for one process, many GPUs and
many nodes (``accelerate launch``). Defaults are the original's: Adam, constant lr 5e-4, batch 8 per
process, 40 epochs, source 768 / target 160 tokens, beam 5, no-repeat 3-grams, length penalty 0.7,
generation max length 110, seed 42. The original's bugs are fixed; the ones that change the numbers can
be switched back on:

- ``--legacy-double-shift``: feed ``y[:-1]`` as decoder input and ``y[1:]`` as labels (the model shifts
  once more internally in the fixed path only, so the legacy path never learns the first target token
  from the decoder start token). Fixed: ``labels = y`` (pad -> -100), the model shifts once.
- ``--legacy-truncation``: tokenize ``text + prompt`` and cut at 768 tokens, which can cut the prompt off.
  Fixed: the article is cut so that the prompt and ``</s>`` always fit.
- ``--legacy-rouge``: ROUGE over mT5 token ids (with ``</s>``) of the decoded prediction and of the
  decoded, truncated reference -- the original's numbers. Fixed: ROUGE on text, Chinese on characters,
  other languages on words (``tasks/rouge.py``), against the full reference.

Fixed without a switch: generation runs on the unwrapped model (the original failed under DDP), the
validation set is split across processes and gathered (it was evaluated whole on every rank), only the
main process writes files, saved weights carry no ``module.`` prefix, no NameError after training;
``--epochs 0`` only evaluates ``--model`` (the original crashed). wandb is optional (``--wandb``, project
``--wandb-project``, default the original's ``mt5-ncls``; ``--wandb-offline``); TensorBoard otherwise.

Outputs under ``--output-dir``: ``checkpoints/step_<N>/`` (``Accelerator.save_state``: model, optimizer,
RNG states, the step/epoch counters) with a ``latest`` file, ``best/`` (``save_pretrained`` of the best
ROUGE-1 model and its tokenizer), ``predictions_step<N>.jsonl``, ``results.json``, ``train_log.jsonl``
and TensorBoard events (or wandb with ``--wandb``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable (mt5.*, tasks.*)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.errors import ArgumentParser, UsageError, run_cli  # noqa: E402
from common.progress import report_progress  # noqa: E402
from mt5.data import Example, load_task, task_sources  # noqa: E402
from tasks.rouge import rouge_scores, rouge_scores_from_tokens  # noqa: E402
from training.arguments import DefaultsHelpFormatter  # noqa: E402

logger = logging.getLogger("mt5")


@dataclass
class FinetuneConfig:
    """Everything the run needs, parsed once from the command line."""

    task: str
    subtask: str
    data_dir: str = "data"
    model: str = "google/mt5-large"
    tokenizer: str | None = None  # defaults to --model
    output_dir: str = "outputs/mt5"
    epochs: int = 40
    max_steps: int = 0  # stop after this many optimizer steps (0: run all epochs)
    batch_size: int = 8  # per process
    eval_batch_size: int = 8  # per process
    lr: float = 5e-4
    weight_decay: float = 0.0
    max_grad_norm: float = 0.0  # 0: no clipping (the original clips nothing)
    max_source_length: int = 768
    max_target_length: int = 160
    num_beams: int = 5
    no_repeat_ngram_size: int = 3
    length_penalty: float = 0.7
    repetition_penalty: float = 1.0
    max_gen_length: int = 110
    seed: int = 42
    log_every: int = 10
    save_every: int = 0  # also checkpoint every N steps (0: at the end of each epoch and of the run only)
    keep_checkpoints: int = 2
    eval_every_epoch: bool = True
    resume_from: str | None = None
    rouge_tokenization: str = "auto"  # auto: char for zh targets, word otherwise
    cpu: bool = False
    mixed_precision: str | None = None  # None: whatever `accelerate launch` / accelerate config says
    wandb: bool = False
    wandb_offline: bool = False
    wandb_project: str = "mt5-ncls"
    wandb_entity: str | None = None
    legacy_double_shift: bool = False
    legacy_truncation: bool = False
    legacy_rouge: bool = False


def parse_args(argv: list[str] | None = None) -> FinetuneConfig:
    d = FinetuneConfig("", "")
    ap = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=DefaultsHelpFormatter)
    ap.add_argument("task", help="ncls, scisummnet or mtgcrosssum")
    ap.add_argument("subtask", help="e.g. simple, ncls_mixed (scisummnet); multitask, sum2zh, sum2en, sci_eval (ncls)")
    ap.add_argument("--data-dir", default=d.data_dir, help="folder holding scisummnet/, ncls/, mtg_sum/")
    ap.add_argument("--model", default=d.model, help="local folder or hub name of an mT5 checkpoint (never downloaded in tests)")
    ap.add_argument("--tokenizer", default=None, help="tokenizer folder or name (default: --model)")
    ap.add_argument("--output-dir", default=d.output_dir, help="checkpoints, predictions and results.json")
    ap.add_argument("--epochs", type=int, default=d.epochs, help="0: only evaluate --model")
    ap.add_argument("--max-steps", type=int, default=d.max_steps, help="stop after N optimizer steps (0: no limit)")
    ap.add_argument("--batch-size", type=int, default=d.batch_size, help="training batch per process")
    ap.add_argument("--eval-batch-size", type=int, default=d.eval_batch_size, help="evaluation batch per process")
    ap.add_argument("--lr", type=float, default=d.lr, help="AdamW learning rate")
    ap.add_argument("--weight-decay", type=float, default=d.weight_decay, help="AdamW weight decay")
    ap.add_argument("--max-grad-norm", type=float, default=d.max_grad_norm, help="clip gradients to this norm (0: off)")
    ap.add_argument("--max-source-length", type=int, default=d.max_source_length, help="source tokens (cut)")
    ap.add_argument("--max-target-length", type=int, default=d.max_target_length, help="training target tokens (cut)")
    ap.add_argument("--num-beams", type=int, default=d.num_beams, help="beams of generate()")
    ap.add_argument("--no-repeat-ngram-size", type=int, default=d.no_repeat_ngram_size, help="generate(): never repeat an n-gram of this size")
    ap.add_argument("--length-penalty", type=float, default=d.length_penalty, help="generate()'s length penalty")
    ap.add_argument("--repetition-penalty", type=float, default=d.repetition_penalty, help="generate()'s repetition penalty")
    ap.add_argument("--max-gen-length", type=int, default=d.max_gen_length, help="generate's max_length (decoder tokens)")
    ap.add_argument("--seed", type=int, default=d.seed, help="seed of data order and initialisation")
    ap.add_argument("--log-every", type=int, default=d.log_every, help="one log line every N steps")
    ap.add_argument("--save-every", type=int, default=d.save_every, help="also checkpoint every N steps (0: at the end of each epoch and of the run only)")
    ap.add_argument("--keep-checkpoints", type=int, default=d.keep_checkpoints, help="newest step checkpoints kept (0: all)")
    ap.add_argument("--no-eval-every-epoch", dest="eval_every_epoch", action="store_false",
                    help="evaluate only at the end of training")
    ap.add_argument("--resume-from", default=None, help="a checkpoints/step_N folder, or the checkpoints folder (uses 'latest')")
    ap.add_argument("--rouge-tokenization", default=d.rouge_tokenization, choices=["auto", "char", "word"],
                    help="ROUGE tokens: char (CJK characters), word, or auto (char for Chinese targets)")
    ap.add_argument("--cpu", action="store_true", help="run on CPU even when a GPU is present")
    ap.add_argument("--mixed-precision", default=None, choices=["no", "fp16", "bf16"],
                    help="Accelerate's mixed precision (default: what `accelerate launch` / its config says)")
    ap.add_argument("--wandb", action="store_true", help="log to Weights & Biases (needs `pip install wandb`)")
    ap.add_argument("--wandb-offline", action="store_true", help="with --wandb: write the run locally only")
    ap.add_argument("--wandb-project", default=d.wandb_project, help="with --wandb: the project")
    ap.add_argument("--wandb-entity", default=None, help="with --wandb: the entity (default: your W&B default)")
    ap.add_argument("--legacy-double-shift", action="store_true", help="reproduce the original's shifted labels")
    ap.add_argument("--legacy-truncation", action="store_true", help="reproduce cutting text+prompt at the source length")
    ap.add_argument("--legacy-rouge", action="store_true", help="reproduce ROUGE over mT5 token ids (with </s>)")
    a = ap.parse_args(argv)
    cfg = FinetuneConfig(**vars(a))
    validate(cfg)
    return cfg


def validate(cfg: FinetuneConfig) -> None:
    """User errors, raised before anything heavy is imported or loaded."""
    task_sources(cfg.task, cfg.subtask)
    for name in ("batch_size", "eval_batch_size", "max_source_length", "max_target_length",
                 "num_beams", "max_gen_length", "log_every"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    for name in ("epochs", "max_steps", "save_every", "keep_checkpoints", "max_grad_norm", "weight_decay"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(cfg, name)}")
    if cfg.wandb_offline and not cfg.wandb:
        raise ValueError("--wandb-offline needs --wandb")
    if cfg.wandb:
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise UsageError("--wandb was given but the wandb package is not installed: `pip install wandb`, "
                             "or drop --wandb to log to TensorBoard") from None


@dataclass
class TrainState:
    """Counters saved with every checkpoint (Accelerate pickles it through register_for_checkpointing)."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # epochs completed
    batch_in_epoch: int = 0  # batches of the current epoch already consumed (per process)
    best_rouge1: float = -1.0

    def state_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            setattr(self, k, v)


def encode_example(tokenizer, ex: Example, cfg: FinetuneConfig) -> dict[str, list[int]]:
    """Token ids of one pair: source = article + prompt + </s>, target = summary + </s>."""
    eos = tokenizer.eos_token_id
    if cfg.legacy_truncation:
        source = tokenizer(ex.text + ex.prompt, max_length=cfg.max_source_length, truncation=True).input_ids
    else:
        prompt = tokenizer(ex.prompt, add_special_tokens=False).input_ids
        room = cfg.max_source_length - len(prompt) - 1
        if room < 0:
            raise ValueError(f"--max-source-length {cfg.max_source_length} is shorter than the prompt {ex.prompt!r} ({len(prompt)} tokens) + </s>")
        text = tokenizer(ex.text, add_special_tokens=False).input_ids
        source = text[:room] + prompt + [eos]
    target = tokenizer(ex.summary, max_length=cfg.max_target_length, truncation=True).input_ids
    return {"input_ids": source, "labels": target}


def collate(batch: list[dict[str, list[int]]], pad_id: int) -> dict[str, Any]:
    """Pad to the longest sequence of the batch: input_ids, attention_mask [B, Ls]; labels [B, Lt] (pad = pad_id)."""
    import torch

    def pad(seqs: list[list[int]]) -> torch.Tensor:
        out = torch.full((len(seqs), max(map(len, seqs))), pad_id, dtype=torch.long)
        for i, s in enumerate(seqs):
            out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        return out

    input_ids = pad([b["input_ids"] for b in batch])
    return {"input_ids": input_ids, "attention_mask": (input_ids != pad_id).long(), "labels": pad([b["labels"] for b in batch])}


def seq2seq_loss(model, batch: dict[str, Any], pad_id: int, legacy_double_shift: bool):
    """Mean token cross entropy of the summary given the source (pad positions ignored)."""
    y = batch["labels"]  # [B, Lt]
    if legacy_double_shift:
        labels = y[:, 1:].clone()
        labels[y[:, 1:] == pad_id] = -100
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    decoder_input_ids=y[:, :-1].contiguous(), labels=labels)
    else:
        labels = y.masked_fill(y == pad_id, -100)
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels)
    return out.loss


def resolve_checkpoint(path: str) -> Path:
    """A step folder, or a checkpoints folder whose ``latest`` file names one."""
    p = Path(path)
    if (p / "latest").is_file():
        p = p / (p / "latest").read_text().strip()
    if not p.is_dir():
        raise FileNotFoundError(f"--resume-from {path}: checkpoint folder not found")
    if not (p / "custom_checkpoint_0.pkl").is_file():
        raise FileNotFoundError(f"--resume-from {p}: not a checkpoint of this script (no custom_checkpoint_0.pkl with the step counters)")
    return p


def save_checkpoint(accelerator, cfg: FinetuneConfig, state: TrainState) -> Path:
    """Accelerate state (model, optimizer, RNG, counters) into checkpoints/step_N, written atomically."""
    root = Path(cfg.output_dir) / "checkpoints"
    final = root / f"step_{state.step}"
    tmp = root / f".tmp_step_{state.step}"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))  # every process writes its own RNG state; the main process the rest
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        (root / "latest.tmp").write_text(final.name)
        os.replace(root / "latest.tmp", root / "latest")
        if cfg.keep_checkpoints:
            steps = sorted((p for p in root.glob("step_*") if p.is_dir()), key=lambda p: int(p.name.split("_")[1]))
            for old in steps[: -cfg.keep_checkpoints]:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def evaluate(accelerator, model, tokenizer, valid: list[Example], encoded: list[dict], cfg: FinetuneConfig) -> tuple[dict, list[dict]]:
    """Generate a summary for every validation example (split across processes) and score ROUGE."""
    import torch
    from accelerate.utils import gather_object

    unwrapped = accelerator.unwrap_model(model)
    unwrapped.eval()
    mine = list(range(accelerator.process_index, len(valid), accelerator.num_processes))
    results: list[tuple[int, str]] = []
    batches = [mine[i : i + cfg.eval_batch_size] for i in range(0, len(mine), cfg.eval_batch_size)]
    with torch.no_grad():
        for idx in report_progress(batches, desc="generate", enabled=accelerator.is_main_process):
            batch = collate([encoded[i] for i in idx], tokenizer.pad_token_id)
            out = unwrapped.generate(
                input_ids=batch["input_ids"].to(accelerator.device),
                attention_mask=batch["attention_mask"].to(accelerator.device),
                max_length=cfg.max_gen_length, num_beams=cfg.num_beams, no_repeat_ngram_size=cfg.no_repeat_ngram_size,
                repetition_penalty=cfg.repetition_penalty, length_penalty=cfg.length_penalty, early_stopping=True,
            )
            results.extend(zip(idx, tokenizer.batch_decode(out, skip_special_tokens=True), strict=True))
    model.train()
    gathered = sorted(gather_object(results))  # every process gets every (index, prediction)
    assert [i for i, _ in gathered] == list(range(len(valid))), "each validation example generated exactly once"
    preds = [p.strip() for _, p in gathered]
    refs = [ex.summary for ex in valid]
    if cfg.legacy_rouge:
        # The original: re-encode both sides with the mT5 tokenizer (</s> included) and score id strings;
        # references come from the truncated target ids.
        legacy_refs = [tokenizer.decode(e["labels"], skip_special_tokens=True) for e in encoded]
        metrics = rouge_scores_from_tokens(
            [list(map(str, tokenizer(p).input_ids)) for p in preds],
            [list(map(str, tokenizer(r).input_ids)) for r in legacy_refs],
        )
    else:
        metrics = {}
        for mode in ("char", "word"):
            group = [i for i, ex in enumerate(valid) if rouge_mode(cfg, ex.lang) == mode]
            if group:
                scores = rouge_scores([preds[i] for i in group], [refs[i] for i in group], mode)
                for k, v in scores.items():
                    metrics[k] = metrics.get(k, 0.0) + v * len(group) / len(valid)  # per-example mean overall
    records = [{"index": i, "lang": ex.lang, "prediction": p, "reference": ex.summary} for i, (ex, p) in enumerate(zip(valid, preds, strict=True))]
    return metrics, records


def rouge_mode(cfg: FinetuneConfig, lang: str) -> str:
    if cfg.rouge_tokenization != "auto":
        return cfg.rouge_tokenization
    return "char" if lang in ("zh", "ja") else "word"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    cfg = parse_args(argv)
    train_ex, valid_ex = load_task(cfg.task, cfg.subtask, cfg.data_dir)  # file errors before the model loads

    import torch
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed
    from transformers import AutoTokenizer, MT5ForConditionalGeneration

    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)  # before the trackers: wandb writes its files under it
    run_name = f"{cfg.task}-{cfg.subtask}"
    if cfg.wandb:
        # A tracker object, not the string "wandb": Accelerate silently drops a named tracker whose package it
        # does not find (validate() already failed loudly). Its first argument is wandb.init's project.
        from accelerate.tracking import WandBTracker

        trackers: list[Any] = [WandBTracker(cfg.wandb_project, name=run_name, entity=cfg.wandb_entity, dir=str(out_dir),
                                            mode="offline" if cfg.wandb_offline else "online")]
    else:
        trackers = ["tensorboard"]  # events under <output-dir>/tensorboard/<task>-<subtask>
    accelerator = Accelerator(
        cpu=cfg.cpu, mixed_precision=cfg.mixed_precision, log_with=trackers,
        project_config=ProjectConfiguration(project_dir=str(out_dir), logging_dir=str(out_dir / "tensorboard")),
    )
    logging.basicConfig(format="%(asctime)s %(name)s %(message)s", level=logging.INFO if accelerator.is_main_process else logging.WARNING)
    set_seed(cfg.seed)
    hparams = {k: v for k, v in dataclasses.asdict(cfg).items() if isinstance(v, (int, float, str, bool))}
    accelerator.init_trackers(run_name, config=hparams)

    tokenizer = AutoTokenizer.from_pretrained(cfg.tokenizer or cfg.model)
    model = MT5ForConditionalGeneration.from_pretrained(cfg.model)
    pad_id = tokenizer.pad_token_id
    train_enc = [encode_example(tokenizer, ex, cfg) for ex in report_progress(train_ex, desc="tokenize train", enabled=accelerator.is_main_process)]
    valid_enc = [encode_example(tokenizer, ex, cfg) for ex in valid_ex]
    logger.info("task %s/%s: %d train, %d valid examples; %d processes on %s", cfg.task, cfg.subtask,
                len(train_ex), len(valid_ex), accelerator.num_processes, accelerator.device)

    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    model, optimizer = accelerator.prepare(model, optimizer)
    state = TrainState()
    accelerator.register_for_checkpointing(state)
    if cfg.resume_from:
        ckpt = resolve_checkpoint(cfg.resume_from)
        accelerator.load_state(str(ckpt))
        logger.info("resumed from %s at step %d (epoch %d, batch %d)", ckpt, state.step, state.epoch, state.batch_in_epoch)

    # The data order is a pure function of (seed, epoch, rank): a resumed run skips the batches it already did.
    sampler = torch.utils.data.DistributedSampler(train_enc, num_replicas=accelerator.num_processes,
                                                  rank=accelerator.process_index, shuffle=True, seed=cfg.seed)
    loader = torch.utils.data.DataLoader(train_enc, batch_size=cfg.batch_size, sampler=sampler,
                                         collate_fn=lambda b: collate(b, pad_id))
    steps_per_epoch = len(loader)
    total = cfg.epochs * steps_per_epoch if not cfg.max_steps else min(cfg.max_steps, cfg.epochs * steps_per_epoch)
    log_path = out_dir / "train_log.jsonl"
    metrics: dict[str, Any] = {}
    records: list[dict] = []
    last_loss = float("nan")

    def run_eval() -> None:
        nonlocal metrics, records
        metrics, records = evaluate(accelerator, model, tokenizer, valid_ex, valid_enc, cfg)
        logger.info("step %d: %s", state.step, " ".join(f"{k} {v:.2f}" for k, v in metrics.items()))
        accelerator.log({f"valid/{k}": v for k, v in metrics.items()}, step=state.step)
        if accelerator.is_main_process:
            with open(out_dir / f"predictions_step{state.step}.jsonl", "w", encoding="utf-8") as f:
                for r in records:
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")
        if metrics["rouge-1"] > state.best_rouge1:
            state.best_rouge1 = metrics["rouge-1"]
            best = out_dir / "best"
            accelerator.unwrap_model(model).save_pretrained(best, is_main_process=accelerator.is_main_process,
                                                            save_function=accelerator.save)
            if accelerator.is_main_process:
                tokenizer.save_pretrained(best)
        accelerator.wait_for_everyone()

    model.train()
    bar = report_progress(total=total, initial=min(state.step, total), desc="train", enabled=accelerator.is_main_process)
    done = bool(cfg.max_steps) and state.step >= cfg.max_steps
    evaluated_at = -1
    t_last, steps_since = time.time(), 0
    while not done and state.epoch < cfg.epochs:
        sampler.set_epoch(state.epoch)
        for i, batch in enumerate(loader):
            if i < state.batch_in_epoch:
                continue  # consumed before the checkpoint we resumed from
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            loss = seq2seq_loss(model, batch, pad_id, cfg.legacy_double_shift)
            accelerator.backward(loss)
            if cfg.max_grad_norm > 0:
                accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.batch_in_epoch += 1
            steps_since += 1
            bar.update(1)
            if state.step % cfg.log_every == 0 or state.step == total:
                last_loss = accelerator.reduce(loss.detach(), reduction="mean").item()
                dt = (time.time() - t_last) / steps_since
                t_last, steps_since = time.time(), 0
                accelerator.log({"train/loss": last_loss, "train/lr": cfg.lr, "train/ms_per_step": 1000 * dt}, step=state.step)
                bar.set_postfix(loss=f"{last_loss:.4f}")
                if accelerator.is_main_process:
                    with open(log_path, "a", encoding="utf-8") as f:
                        f.write(json.dumps({"step": state.step, "epoch": state.epoch, "loss": last_loss}) + "\n")
            epoch_end = state.batch_in_epoch == steps_per_epoch
            if epoch_end:
                state.epoch += 1
                state.batch_in_epoch = 0
            done = bool(cfg.max_steps) and state.step >= cfg.max_steps
            if epoch_end and cfg.eval_every_epoch:
                run_eval()
                evaluated_at = state.step
            if epoch_end or done or (cfg.save_every and state.step % cfg.save_every == 0):
                save_checkpoint(accelerator, cfg, state)
            if done:
                break
    bar.close()
    if evaluated_at != state.step:
        run_eval()

    final = {**metrics, "step": state.step, "epoch": state.epoch, "train_loss": last_loss,
             "best_rouge-1": state.best_rouge1, "num_valid": len(valid_ex)}
    if accelerator.is_main_process:
        pred_file = out_dir / f"predictions_step{state.step}.jsonl"
        result = {"task": cfg.task, "subtask": cfg.subtask, "metrics": final, "predictions_file": str(pred_file),
                  "rouge": "mt5-token-ids (legacy)" if cfg.legacy_rouge else "text (char for zh, word otherwise)",
                  "config": dataclasses.asdict(cfg)}
        (out_dir / "results.json").write_text(json.dumps(result, ensure_ascii=False, indent=2, default=str))
    accelerator.end_training()
    return final


if __name__ == "__main__":
    run_cli(main, "finetune_mt5.py")
