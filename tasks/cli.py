"""The finetuning command line: the flags every task shares (``training.arguments``) plus the options of the
task ``--task`` names, which the task declares itself (``Task.options_cls``: a dataclass whose fields are
flags, with its help lines and ``validate``). Adding a task flag means editing the task, not ``training/``.

``--task`` is read first; the parser then holds that task's options (``--task X --help`` lists them; plain
``--help`` lists the tasks and says so). The other tasks' options are parsed without help lines, so that one
given to the wrong task is refused by name in one line instead of argparse's "unrecognized arguments".
"""

from __future__ import annotations

import argparse
from dataclasses import fields

from common.errors import ArgumentParser, UsageError
from tasks import registry
from training.arguments import FinetuneConfig, build_finetune_parser, finetune_config, validate_finetune

TASK_HELP = ("task name (tasks/registry.py): xnli, pawsx, xquad, mlqa, tydiqa, ncls, scisummnet_zh; cloze, seq2seq "
             "(your own files: --train-file ...); --task NAME --help lists the task's own options")
DEFAULTS_NOTE = "A task may set its own defaults for finetuning flags not given (ncls, scisummnet_zh: mGLM's " \
                "decoding recipe; see the README)."


def options_classes() -> dict[str, type]:
    """Task name -> its options class, for every registered task that has one."""
    out = {}
    for name in registry.TASKS:
        cls = registry.get(name).options_cls
        if cls is not None:
            out[name] = cls
    return out


def build_parser(task: str | None = None) -> argparse.ArgumentParser:
    """The finetuning parser for ``--task task`` (None: the shared flags, and how to see a task's own)."""
    by_task = options_classes()
    own = by_task.get(registry.get(task).name) if task else None
    others = list(dict.fromkeys(cls for cls in by_task.values() if cls is not own))
    if task:
        epilog = DEFAULTS_NOTE
    else:
        epilog = (f"Each task has options of its own (generation lengths, beams, QA windows, your own files ...): "
                  f"`finetune_glm.py --task NAME --help` lists them. Tasks: {', '.join(registry.TASKS)}.\n"
                  + DEFAULTS_NOTE)
    return build_finetune_parser(TASK_HELP, [own] if own is not None else [], others, epilog)


def parse_finetune_args(argv: list[str] | None = None) -> FinetuneConfig:
    """Parse, fill the defaults (the finetuning ones, then the task's ``flag_defaults``), refuse the flags
    the task does not own, and validate each option once: the shared ones here, the task's by its class."""
    pre = ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--task", help="the task, read first to build its parser")
    task = pre.parse_known_args(argv)[0].task
    task_cls = registry.get(task) if task else None  # an unknown name: one line listing the tasks
    ns = build_parser(task).parse_args(argv)
    if task_cls is None:
        raise ValueError(f"--task NAME is required (one of {', '.join(registry.TASKS)})")
    own = {f.name for f in fields(task_cls.options_cls)} if task_cls.options_cls is not None else set()
    foreign = sorted({f.name for cls in options_classes().values() for f in fields(cls)} - own)
    given = ["--" + n.replace("_", "-") for n in foreign if getattr(ns, n, None) not in (None, False)]
    if given:
        raise UsageError(f"{' '.join(given)}: not an option of --task {task} (`finetune_glm.py --task {task} "
                         "--help` lists its options)")
    cfg = finetune_config(ns, task_cls.options_cls, dict(task_cls.flag_defaults))
    if cfg.task_options is not None:
        cfg.task_options.validate(cfg.finetune)
    validate_finetune(cfg, task_cls.reads_data_dir)
    return cfg
