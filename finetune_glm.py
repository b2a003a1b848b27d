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
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from model import GLMModel
from model.config import build_model_config
from model.glm import param_groups_for_weight_decay
from mpu.initialize import ParallelState
from tasks import registry
from tasks.base import EpochBatches, default_select_on, evaluate, format_table, language_scores, selection_key
from tasks.cli import parse_finetune_args
from training import checkpoint as ckpt
from training import setup
from training.arguments import FinetuneArgs, FinetuneConfig
from training.engine import build_engine
from training.loop import LoopConfig, LoopState, train
from training.lr_schedule import LRSchedule


def main(argv: list[str] | None = None) -> dict:
    return run(parse_finetune_args(argv))


def run(cfg: FinetuneConfig) -> dict:
    t, o, f = cfg.train, cfg.optim, cfg.finetune
    task_cls = registry.get(f.task)
    with setup.run_session(t, f"finetune {f.task}") as session:
        info, parallel_state, log = session.info, session.parallel_state, session.log
        out_dir = Path(t.save or t.log_dir) if (t.save or t.log_dir) else None
        if out_dir is not None and (out_dir / "results.json").exists() and not f.overwrite and not t.load:
            raise ValueError(f"{out_dir / 'results.json'} exists; pass --overwrite to replace it")

        # Tokenizer, task, data: a resumed finetune (--load) or our pretrained checkpoint records its model
        # config and tokenizer ([dBLOCK] included); a new table pads the tokenizer to 128 x TP.
        found = setup.find_resume(t.load, task=task_cls.name)  # verified; a finetune of this task only
        pre = t.load_pretrained if t.load_pretrained and not t.load else None
        meta = found.meta if found else ckpt.pretrained_meta(t.load_pretrained)
        tok = setup.checkpoint_tokenizer(f.tokenizer_model, meta, "the checkpoint")
        vocab = setup.vocab_rows(tok, parallel_state, cfg.model.make_vocab_size_divisible_by,
                                 resumed_meta=found.meta if found else None, pretrained=pre, pretrained_meta=meta,
                                 trust=t.trust_checkpoint)
        task = task_cls(tok, f.seq_length, f.pattern_id, options=cfg.task_options)
        data = read_task_data(task, f, log)

        # Model, weights, engine, resume -----------------------------------------------------------
        model_config = build_model_config(cfg.model, vocab, seq_length=f.seq_length,
                                          tensor_parallel_size=t.model_parallel_size,
                                          base_config=(meta or {}).get("model_config"))
        model = GLMModel(model_config, parallel_state, init_seed=t.seed).to(info.device)
        setup.load_pretrained_weights(model, t, parallel_state, log)
        setup.compile_model(model, t, log)
        engine = build_engine(model, param_groups_for_weight_decay(model, o.weight_decay), parallel_state, o, t,
                              cfg.ds_config, info.device)
        gas = engine.grad_accum
        batches = EpochBatches(max(1, len(data.train_samples)), t.batch_size, parallel_state.dp_size, gas, t.seed)
        steps_per_epoch = batches.steps_per_epoch
        train_iters, eval_interval, save_interval = loop_lengths(cfg, steps_per_epoch)
        scorer = Scorer(task, engine, parallel_state, info.device, f.eval_batch_size or t.batch_size, info.rank)
        meta_base = setup.checkpoint_meta(cfg.to_dict(), model_config, parallel_state, tok, t.seed, task=task.name)
        best = BestModel(scorer, data, engine, Path(t.save) / "best" if t.save else None, meta_base,
                         parallel_state, info.rank, log)
        state = LoopState()
        if found is not None:
            state.step = setup.resume(engine, found, model_config, parallel_state, info.rank, t)
            best.record.update(found.meta.get("finetune_best", {}))
            log.info(f"resumed from {found.where} at step {state.step}")

        def loss_fn(eng, batch):
            return task.loss(eng, setup.to_device(batch, info.device), parallel_state), "task"

        def train_batches(start_step: int) -> Iterator[dict]:
            for idx in batches.iterate(start_step, parallel_state.dp_rank):
                yield task.collate([data.train_samples[i] for i in idx])

        save_fn = setup.checkpoint_saver(engine, t.save, lambda step: {**meta_base, "finetune_best": dict(best.record),
                                         "data_position": {"step": step, "micro_batches": step * gas,
                                                           "epoch": step / steps_per_epoch}},
                                         parallel_state, info.rank, log)
        writer, _ = setup.metrics_writer(t, info.rank, state.step)
        t0 = time.time()
        if train_iters > 0:
            schedule = LRSchedule(lr=o.lr, decay_iters=o.lr_decay_iters or train_iters, warmup=o.warmup,
                                  decay_style=o.lr_decay_style, decay_ratio=o.lr_decay_ratio)
            log.info(f"{train_iters} steps ({steps_per_epoch} per epoch, global batch {batches.global_batch}), "
                     f"dev every {eval_interval} steps, selecting on {data.select_on}")
            loop_cfg = LoopConfig(train_iters=train_iters, grad_accum=gas, log_interval=t.log_interval,
                                  eval_interval=eval_interval, save_interval=save_interval,
                                  exit_signal_save=t.exit_signal_save, tokens_per_sample=f.seq_length,
                                  objectives=("task",))
            state = train(engine, parallel_state, loop_cfg, state, schedule, loss_fn, train_batches, save_fn,
                          best.eval_fn, writer, info.rank)
            if state.stopped_by_signal:
                return {"step": state.step, "stopped_by_signal": True, "train_losses": state.step_losses}
            best.restore()  # final numbers from the selected model
        writer.close()

        result = {"task": task.name, "metric": task.metric_name, "select_on": data.select_on,
                  "pattern_id": task.pattern_id, "absent": data.absent,
                  "best_step": best.record["step"] if train_iters > 0 else None, "step": state.step,
                  "train_iters": train_iters, "steps_per_epoch": steps_per_epoch, "eval_limit": f.eval_limit}
        return final_scores(result, scorer, data, state, t0, out_dir if info.rank == 0 else None, log)


# ------------------------------------------------------------------------------------------- data
@dataclass
class TaskData:
    """The examples of every split (dev / test per language, without empty languages), their encoded samples,
    the languages reported absent per split and the dev set that selects the model (``select_on``)."""

    train_examples: list
    dev: dict[str, list]
    test: dict[str, list]
    absent: dict[str, list[str]]
    select_on: str | None
    key: str | None  # selection_key(select_on)
    train_samples: list = field(default_factory=list)
    dev_samples: dict[str, list] = field(default_factory=dict)
    test_samples: dict[str, list] = field(default_factory=dict)


def read_task_data(task, f: FinetuneArgs, log) -> TaskData:
    """Read and check every split before any training: absent languages, ``--eval-limit``, the model-selection
    set (``--select-on``, defaulted when training), then encode the samples."""
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
    data = TaskData(train_examples, dev, test, absent, select_on, key, task.train_samples(train_examples),
                    {k: task.eval_samples(v) for k, v in dev.items()}, {k: task.eval_samples(v) for k, v in test.items()})
    if f.epochs > 0 and not data.train_samples:
        raise ValueError(f"{f.task}: the training split in {data_dir} yields no training samples")
    return data


# ------------------------------------------------------------------------------------ evaluation
class Scorer:
    """Scores the samples of every language of a split with the task's metrics (all data-parallel ranks)."""

    def __init__(self, task, engine, parallel_state: ParallelState, device: torch.device, batch_size: int,
                 rank: int):
        self.task, self.engine, self.parallel_state = task, engine, parallel_state
        self.device, self.batch_size, self.rank = device, batch_size, rank

    def predict_batch(self, samples: list[dict]) -> list:
        return self.task.predict(self.engine, setup.to_device(self.task.collate(samples), self.device),
                                 self.parallel_state)

    def score(self, split: str, samples: dict[str, list[dict]], examples: dict) -> tuple[dict, dict]:
        """(scores per language, predictions per language)."""
        self.engine.eval()
        preds = {}
        for lang, s in samples.items():
            per_sample = evaluate(self.predict_batch, s, self.batch_size, self.parallel_state,
                                  desc=f"{split}-{lang}", rank=self.rank)
            preds[lang] = self.task.aggregate(examples[lang], s, per_sample)
        return language_scores(preds, examples, self.task.metrics, self.task.has_gold), preds


class BestModel:
    """Model selection: the best dev score on ``--select-on`` so far (``record``, saved in every checkpoint's
    meta.json as ``finetune_best``), the model itself under ``<save>/best`` (one on disk) or in memory
    without ``--save``; ``restore`` loads it back at the end."""

    def __init__(self, scorer: Scorer, data: TaskData, engine, best_dir: Path | None, meta_base: dict,
                 parallel_state: ParallelState, rank: int, log):
        self.scorer, self.data, self.engine, self.best_dir = scorer, data, engine, best_dir
        self.meta_base, self.parallel_state, self.rank, self.log = meta_base, parallel_state, rank, log
        self.record: dict = {"score": None, "step": None, "dev": {}}
        self.in_memory: dict[str, torch.Tensor] = {}

    def eval_fn(self, step: int) -> dict[str, float]:
        task, data, best = self.scorer.task, self.data, self.record
        metric = task.metric_name
        scores, _ = self.scorer.score("dev", data.dev_samples, data.dev)
        if data.key not in scores:
            raise ValueError(f"--select-on {data.select_on}: the dev set of {data.key!r} carries no labels")
        value = scores[data.key][metric]
        if best["score"] is None or value > best["score"]:
            best.update(score=value, step=step, dev=scores)
            if self.best_dir is not None:
                meta = {**self.meta_base, "finetune_best": dict(best)}
                path = ckpt.save_checkpoint(self.engine, self.best_dir, step, meta, {"iteration": step}, self.rank,
                                            self.parallel_state.rng_tracker)
                if self.rank == 0:  # one best model on disk
                    for old in self.best_dir.iterdir():
                        if old.is_dir() and old.name != path.name:
                            shutil.rmtree(old, ignore_errors=True)
            else:
                self.in_memory.clear()
                self.in_memory.update({k: v.detach().to("cpu", copy=True)
                                       for k, v in self.engine.module.state_dict().items()})
            self.log.info(f"new best {data.select_on} {metric} {value:.2f} at step {step}")
        flat = {f"{m}_{lang}": v[m] for lang, v in scores.items() for m in task.metric_names}
        flat[f"best_{metric}"] = best["score"]
        return flat

    def restore(self) -> None:
        if self.best_dir is not None and (self.best_dir / ckpt.LATEST).is_file():
            bdir, btag = ckpt.resolve(self.best_dir)
            self.engine.load(str(bdir), btag, load_optimizer=False)
        elif self.in_memory:
            self.engine.module.load_state_dict(self.in_memory)


def loop_lengths(cfg: FinetuneConfig, steps_per_epoch: int) -> tuple[int, int, int]:
    """(train_iters, eval_interval, save_interval): the flags when given, else --epochs x steps per epoch
    (0 with --epochs 0), dev every --eval-epoch epochs, and saving only at the end (and the best model)."""
    t, f = cfg.train, cfg.finetune
    train_iters = t.train_iters if "train_iters" in cfg.given else f.epochs * steps_per_epoch
    if f.epochs == 0 and "train_iters" not in cfg.given:
        train_iters = 0
    eval_interval = t.eval_interval if "eval_interval" in cfg.given else f.eval_epoch * steps_per_epoch
    save_interval = t.save_interval if "save_interval" in cfg.given else 10**9  # the end always saves
    return train_iters, eval_interval, save_interval


def final_scores(head: dict, scorer: Scorer, data: TaskData, state, t0: float, out_dir: Path | None, log) -> dict:
    """Score dev and test with the final (selected) model: ``head`` + scores + losses + world + wall time
    since ``t0``; the tables logged and, with ``out_dir``, written with the predictions (``write_results``)."""
    task = scorer.task
    dev_scores, dev_preds = scorer.score("dev", data.dev_samples, data.dev)
    test_scores, test_preds = scorer.score("test", data.test_samples, data.test) if data.test else ({}, {})
    world = {"tp": scorer.parallel_state.tp_size, "dp": scorer.parallel_state.dp_size}
    result = {**head, "dev": dev_scores, "test": test_scores, **setup.loss_record(state), "world": world,
              "wall_s": time.time() - t0}
    tables = [format_table(f"{task.name} dev", dev_scores, task.metric_names, data.absent["dev"], task.languages)]
    if data.test or data.absent.get("test"):
        tables.append(format_table(f"{task.name} test", test_scores, task.metric_names, data.absent["test"],
                                   task.languages))
    log.info("\n" + "\n".join(tables))
    if out_dir is not None:
        write_results(out_dir, result, tables, task, {"dev": (dev_preds, data.dev), "test": (test_preds, data.test)})
    return result


def write_results(out_dir: Path, result: dict, tables: list[str], task, splits: dict[str, tuple[dict, dict]]) -> None:
    """results.json, results.txt (the tables) and per-example predictions of every split and language."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    (out_dir / "results.txt").write_text("\n\n".join(tables) + "\n", encoding="utf-8")
    pred_dir = out_dir / "predictions"
    pred_dir.mkdir(exist_ok=True)
    for split, (preds, examples) in splits.items():
        for lang, p in preds.items():
            with open(pred_dir / f"{task.name}-{split}-{lang}.jsonl", "w", encoding="utf-8") as w:
                for row in task.prediction_records(examples[lang], p):
                    w.write(json.dumps(row, ensure_ascii=False) + "\n")
            task.write_extra_predictions(pred_dir, split, lang, examples[lang], p)


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
    from common.errors import run_cli

    run_cli(main, "finetune_glm.py")
