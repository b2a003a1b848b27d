"""Finetune (multilingual) GLM on a registered task and evaluate it per language.

    python finetune_glm.py --task xnli --data-dir data/sample/tasks/xnli/xtreme --load-pretrained CKPT --epochs 2
    deepspeed --num_gpus 8 finetune_glm.py --deepspeed --deepspeed_config config/tasks/xnli.json --task xnli ...

Flow (as ``pretrain_glm.py``): config -> torch.distributed + TP/DP groups -> tokenizer -> task (readers,
pattern, verbalizers; ``tasks/registry.py``) -> train / dev / test examples -> ``GLMModel`` -> pretrained
weights (``--load-pretrained``: our checkpoints, GLM/SAT layouts, released .pt; any source TP size) ->
engine -> ``--load`` (resume a finetune exactly) -> the shared training loop.

Epoch-based: ``train_iters = epochs x steps per epoch`` unless ``--train-iters`` is given. Every
``--eval-epoch`` epochs (or ``--eval-interval`` steps) the dev sets of all languages are scored; the best
model by ``--select-on`` (default: ``en-dev``, the zero-shot protocol, when a labelled English dev set
exists, else the first requested language's dev set, said in the log; ``all-dev`` reproduces mGLM; not
needed with ``--epochs 0``) is kept under ``<save>/best``, reloaded at the end and scored on dev and test.
Results: ``results.json`` (per language, unweighted mean ``avg``, pooled, ``absent`` languages),
``results.txt`` (tables) and per-example predictions, in ``--save`` (or ``--log-dir``).

Inputs are checked before any training: a language whose dev or test file is missing or empty is an error
when ``--languages`` names it, else a warning listing it (its column reads ``absent``); ``--load`` takes only
a finetune of this task (``meta.json`` ``task``).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from training.arguments import FinetuneConfig, parse_finetune_args


def main(argv: list[str] | None = None) -> dict:
    return run(parse_finetune_args(argv))


def run(cfg: FinetuneConfig) -> dict:


    from data_utils.tokenizer import GLMTokenizer
    from model import GLMModel
    from model.glm import param_groups_for_weight_decay
    from pretrain_glm import build_model_config
    from tasks import registry
    from tasks.base import (
        EpochBatches,
        default_select_on,
        evaluate,
        format_table,
        language_scores,
        selection_key,
    )
    from training import checkpoint as ckpt
    from training.distributed import shutdown, start_run
    from training.engine import build_engine
    from training.logging import MetricsWriter
    from training.loop import LoopConfig, LoopState, train
    from training.lr_schedule import LRSchedule

    t, o, f = cfg.train, cfg.optim, cfg.finetune
    task_cls = registry.get(f.task)
    run_ctx = start_run(t, f"finetune {f.task}")
    info, ps, log = run_ctx.info, run_ctx.ps, run_ctx.log
    save_lock = None
    try:
        save_lock = ckpt.lock_save_dir(t.save, info.rank)  # one writer per --save, for the whole run

        out_dir = Path(t.save or t.log_dir) if (t.save or t.log_dir) else None
        if out_dir is not None and (out_dir / "results.json").exists() and not f.overwrite and not t.load:
            raise ValueError(f"{out_dir / 'results.json'} exists; pass --overwrite to replace it")

        # Tokenizer, task, data -------------------------------------------------------------------
        # A resumed finetune (--load) or our pretrained checkpoint records its model config and tokenizer.
        load_meta = None
        if t.load:
            load_dir, load_tag, load_meta = ckpt.resolve_intact(t.load)  # verified; falls back from a damaged newest
            check_finetune_of(load_meta, task_cls.name, load_dir / load_tag)
        pre_meta = load_meta if t.load else ckpt.pretrained_meta(t.load_pretrained)
        tok_path = f.tokenizer_model or (pre_meta or {}).get("tokenizer")
        if not tok_path:
            raise ValueError("--tokenizer-model FILE.model is required (the checkpoint records none)")
        if not Path(tok_path).is_file():
            raise FileNotFoundError(f"--tokenizer-model {tok_path}: file not found")
        # A checkpoint pretrained with --block-mask-prob > 0 has [dBLOCK] at N+10: rebuild the same tokenizer.
        tok = GLMTokenizer(tok_path, add_dblock=bool((pre_meta or {}).get("tokenizer_add_dblock", False)))
        # A new table pads the tokenizer to 128 x TP; a pretrained one keeps its rows (checked against the
        # tokenizer before any tensor is loaded). --load: the run's own meta records the rows.
        pre = t.load_pretrained if t.load_pretrained and not t.load else None
        vocab = (int(load_meta["model_config"]["vocab_size"]) if t.load and "model_config" in (load_meta or {})
                 else ckpt.embedding_rows(tok, ps.tp_size, cfg.model.make_vocab_size_divisible_by, pre, pre_meta,
                                          tok_path, trust=t.trust_checkpoint))
        task = task_cls(tok, f.seq_length, f.pattern_id, options=f)
        data_dir = Path(f.data_dir) if f.data_dir else task.data_source()  # --task cloze / seq2seq: files
        langs = list(f.languages) or None
        train_examples = task.read_split(data_dir, "train", None)[task.train_language] if f.epochs > 0 else []
        dev = task.read_split(data_dir, "dev", langs)
        test = task.read_split(data_dir, "test", langs)
        absent = {"dev": absent_languages(task, "dev", dev, langs, data_dir, log)}
        if test:  # a task or folder without any test file has no test split (said below), nothing is absent
            absent["test"] = absent_languages(task, "test", test, langs, data_dir, log)
        dev = {k: v for k, v in dev.items() if v}
        test = {k: v for k, v in test.items() if v}
        if f.eval_limit is not None:  # a smoke run: the scores are not the benchmark's (results.json says so)
            dev = {k: v[:f.eval_limit] for k, v in dev.items()}
            test = {k: v[:f.eval_limit] for k, v in test.items()}
            log.warning(f"--eval-limit {f.eval_limit}: scoring only the first {f.eval_limit} examples per language")
        # Model selection: needed only when training. Unless given, the English dev set when there is a
        # labelled one, else the first requested (or read) language's.
        select_on = f.select_on
        if select_on is None and f.epochs > 0:
            select_on, why = default_select_on(dev, langs, task.has_gold)
            if select_on is None:
                raise ValueError(f"{data_dir}: no labelled dev set to select the model on ({why}; dev languages "
                                 f"read: {', '.join(dev) or 'none'}); pass --epochs 0 to evaluate only")
            log.info(f"--select-on not given: selecting on {select_on} ({why})")
        key = selection_key(select_on) if select_on is not None else None
        if key is not None and f.epochs > 0:
            check_selection_set(select_on, key, dev, task.has_gold, data_dir)
        log.info(f"{f.task}: {len(train_examples)} train examples ({task.train_language}); dev "
                 + ", ".join(f"{k} {len(v)}" for k, v in dev.items())
                 + ("; test " + ", ".join(f"{k} {len(v)}" for k, v in test.items()) if test else "; no test files"))
        train_samples = task.train_samples(train_examples)
        dev_samples = {k: task.eval_samples(v) for k, v in dev.items()}
        test_samples = {k: task.eval_samples(v) for k, v in test.items()}
        if f.epochs > 0 and not train_samples:
            raise ValueError(f"{f.task}: the training split in {data_dir} yields no training samples")

        # Model, weights, engine ------------------------------------------------------------------
        model_config = build_model_config(cfg.as_pretrain(), vocab, (pre_meta or {}).get("model_config"))
        model = GLMModel(model_config, ps, init_seed=t.seed).to(info.device)
        if t.load_pretrained and not t.load:
            log.info(f"initialised weights from "
                     f"{ckpt.load_pretrained(model, t.load_pretrained, ps, trust=t.trust_checkpoint)}")
        if t.compile:
            model.compile()  # in place: state_dict keys unchanged, checkpoints stay interchangeable
        engine = build_engine(model, param_groups_for_weight_decay(model, o.weight_decay), ps, o, t,
                              cfg.ds_config, info.device)
        gas = engine.grad_accum
        batches = EpochBatches(max(1, len(train_samples)), t.batch_size, ps.dp_size, gas, t.seed)
        steps_per_epoch = batches.steps_per_epoch
        train_iters = t.train_iters if "train_iters" in cfg.given else f.epochs * steps_per_epoch
        if f.epochs == 0 and "train_iters" not in cfg.given:
            train_iters = 0
        eval_interval = t.eval_interval if "eval_interval" in cfg.given else f.eval_epoch * steps_per_epoch
        save_interval = t.save_interval if "save_interval" in cfg.given else 10**9  # the end always saves
        eval_bs = f.eval_batch_size or t.batch_size
        device = info.device

        def to_device(batch: dict) -> dict:
            return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}

        def predict_batch(samples: list[dict]) -> list:
            return task.predict(engine, to_device(task.collate(samples)), ps)

        def score(split: str, samples: dict[str, list[dict]], examples: dict, step: int) -> tuple[dict, dict]:
            engine.eval()
            preds = {}
            for lang, s in samples.items():
                per_sample = evaluate(predict_batch, s, eval_bs, ps, desc=f"{split}-{lang}", rank=info.rank)
                preds[lang] = task.aggregate(examples[lang], s, per_sample)
            return language_scores(preds, examples, task.metrics, task.has_gold), preds

        # Resume, best-model tracking -------------------------------------------------------------
        state = LoopState()
        best = {"score": None, "step": None, "dev": {}}
        if t.load:
            ckpt.check_compatible(load_meta, model_config.to_dict(), ps.tp_size,
                                  f"--load {load_dir / load_tag}", ps.dp_size)
            engine.load(str(load_dir), load_tag, load_optimizer=not t.no_load_optim, trust=t.trust_checkpoint)
            ckpt.load_rng(load_dir, load_tag, info.rank, ps.rng_tracker, trust=t.trust_checkpoint)
            state.step = int(load_meta["step"])
            best.update(load_meta.get("finetune_best", {}))
            log.info(f"resumed from {load_dir / load_tag} at step {state.step}")
        meta_base = {"config": cfg.to_dict(), "model_config": model_config.to_dict(), "tp_size": ps.tp_size,
                     "dp_size": ps.dp_size, "tokenizer": tok.model_path, "seed": t.seed, "task": task.name}
        best_dir = Path(t.save) / "best" if t.save else None
        best_in_memory: dict[str, torch.Tensor] = {}
        metric = task.metric_name

        def eval_fn(step: int) -> dict[str, float]:
            scores, _ = score("dev", dev_samples, dev, step)
            if key not in scores:
                raise ValueError(f"--select-on {select_on}: the dev set of {key!r} carries no labels")
            value = scores[key][metric]
            if best["score"] is None or value > best["score"]:
                best.update(score=value, step=step, dev=scores)
                if best_dir is not None:
                    meta = {**meta_base, "finetune_best": dict(best)}
                    path = ckpt.save_checkpoint(engine, best_dir, step, meta, {"iteration": step}, info.rank,
                                                ps.rng_tracker)
                    if info.rank == 0:  # one best model on disk
                        for old in best_dir.iterdir():
                            if old.is_dir() and old.name != path.name:
                                shutil.rmtree(old, ignore_errors=True)
                else:
                    best_in_memory.clear()
                    best_in_memory.update({k: v.detach().to("cpu", copy=True)
                                           for k, v in engine.module.state_dict().items()})
                log.info(f"new best {select_on} {metric} {value:.2f} at step {step}")
            flat = {f"{m}_{lang}": v[m] for lang, v in scores.items() for m in task.metric_names}
            flat[f"best_{metric}"] = best["score"]
            return flat

        def loss_fn(eng, batch):
            return task.loss(eng, to_device(batch), ps), "task"

        def train_batches(start_step: int) -> Iterator[dict]:
            for idx in batches.iterate(start_step, ps.dp_rank):
                yield task.collate([train_samples[i] for i in idx])

        save_fn = None
        if t.save:
            def save_fn(step: int) -> None:
                meta = {**meta_base, "finetune_best": dict(best),
                        "data_position": {"step": step, "micro_batches": step * gas, "epoch": step / steps_per_epoch}}
                log.info(f"saved checkpoint {ckpt.save_checkpoint(engine, t.save, step, meta, {'iteration': step}, info.rank, ps.rng_tracker)}")

        log_dir = t.log_dir or (str(Path(t.save) / "logs") if t.save else None)
        # Step N is complete in checkpoint N (logged before it was saved): drop only the rows after it.
        writer = MetricsWriter(log_dir, info.rank, tensorboard=not t.no_tensorboard,
                               purge_step=state.step + 1 if state.step else None)
        t0 = time.time()
        if train_iters > 0:
            schedule = LRSchedule(lr=o.lr, decay_iters=o.lr_decay_iters or train_iters, warmup=o.warmup,
                                  decay_style=o.lr_decay_style, decay_ratio=o.lr_decay_ratio)
            log.info(f"{train_iters} steps ({steps_per_epoch} per epoch, global batch {batches.global_batch}), "
                     f"dev every {eval_interval} steps, selecting on {select_on}")
            loop_cfg = LoopConfig(train_iters=train_iters, grad_accum=gas, log_interval=t.log_interval,
                                  eval_interval=eval_interval, save_interval=save_interval,
                                  exit_signal_save=t.exit_signal_save, tokens_per_sample=f.seq_length,
                                  progress=sys.stderr.isatty(), objectives=("task",))
            state = train(engine, ps, loop_cfg, state, schedule, loss_fn, train_batches, save_fn, eval_fn, writer,
                          info.rank)
            if state.stopped_by_signal:
                return {"step": state.step, "stopped_by_signal": True, "train_losses": state.step_losses}
            # Final numbers from the selected model.
            if best_dir is not None and (best_dir / ckpt.LATEST).is_file():
                bdir, btag = ckpt.resolve(best_dir)
                engine.load(str(bdir), btag, load_optimizer=False)
            elif best_in_memory:
                engine.module.load_state_dict(best_in_memory)
        writer.close()

        dev_scores, dev_preds = score("dev", dev_samples, dev, state.step)
        test_scores, test_preds = score("test", test_samples, test, state.step) if test else ({}, {})
        result = {
            "task": task.name, "metric": metric, "select_on": select_on,
            "pattern_id": task.pattern_id, "absent": absent,
            "best_step": best["step"] if train_iters > 0 else None, "step": state.step, "train_iters": train_iters,
            "steps_per_epoch": steps_per_epoch, "eval_limit": f.eval_limit, "dev": dev_scores, "test": test_scores,
            "train_loss_first": state.step_losses[0] if state.step_losses else None,
            "train_loss_last": state.step_losses[-1] if state.step_losses else None,
            "train_losses": state.step_losses, "history": state.history,
            "world": {"tp": ps.tp_size, "dp": ps.dp_size}, "wall_s": time.time() - t0,
        }
        tables = [format_table(f"{task.name} dev", dev_scores, task.metric_names, absent["dev"], task.languages)]
        if test or absent.get("test"):
            tables.append(format_table(f"{task.name} test", test_scores, task.metric_names, absent["test"],
                                       task.languages))
        log.info("\n" + "\n".join(tables))
        if info.rank == 0 and out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "results.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
            (out_dir / "results.txt").write_text("\n\n".join(tables) + "\n", encoding="utf-8")
            pred_dir = out_dir / "predictions"
            pred_dir.mkdir(exist_ok=True)
            for split, preds, examples in (("dev", dev_preds, dev), ("test", test_preds, test)):
                for lang, p in preds.items():
                    with open(pred_dir / f"{task.name}-{split}-{lang}.jsonl", "w", encoding="utf-8") as w:
                        for row in task.prediction_records(examples[lang], p):
                            w.write(json.dumps(row, ensure_ascii=False) + "\n")
                    task.write_extra_predictions(pred_dir, split, lang, examples[lang], p)
        return result
    finally:
        if save_lock is not None:
            save_lock.release()
        shutdown()


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


def absent_languages(task, split: str, found: dict, requested: list[str] | None, data_dir: Path, log) -> list[str]:
    """Languages of ``split`` whose file is missing or empty: an error for one the user asked for
    (``--languages``), else a warning listing them; returned so that the results tables show them absent."""
    expected = requested if requested is not None else task.expected_languages(split)
    empty = [lang for lang in expected if lang in found and not found[lang]]
    missing = [lang for lang in expected if lang not in found]
    if requested is not None and (empty or missing):
        raise ValueError(f"--languages {' '.join(empty + missing)}: the {split} set of {data_dir} has "
                         + "; ".join(x for x in (f"an empty file for {', '.join(empty)}" if empty else "",
                                                 f"no file for {', '.join(missing)}" if missing else "") if x))
    if empty or missing:
        log.warning(f"{task.name} {split} in {data_dir}: "
                    + "; ".join(x for x in (f"{getattr(task, 'absent_reason', 'no file')} for {', '.join(missing)}"
                                            if missing else "",
                                            f"empty file for {', '.join(empty)}" if empty else "") if x)
                    + " (shown as absent in the results; not in avg or pooled)")
    return [lang for lang in expected if lang in empty or lang in missing]


def check_selection_set(select_on: str, key: str, dev: dict, has_gold, data_dir: Path) -> None:
    """Before training: the set ``--select-on`` names exists and is labelled (else the first evaluation
    would fail after a whole epoch)."""
    if key in ("avg", "pooled"):
        if not any(v and has_gold(v) for v in dev.values()):
            raise ValueError(f"--select-on {select_on}: no dev set in {data_dir} carries labels")
        return
    if key not in dev:
        raise FileNotFoundError(f"--select-on {select_on}: no dev set of language {key!r} in {data_dir} "
                                f"(dev languages found: {', '.join(dev) or 'none'})")
    if not has_gold(dev[key]):
        raise ValueError(f"--select-on {select_on}: the dev set of {key!r} in {data_dir} carries no labels")


if __name__ == "__main__":
    from training.arguments import run_cli

    run_cli(main, "finetune_glm.py")
