"""Task registry: ``--task NAME`` -> task class, imported lazily (``tasks/__init__.py`` stays import-free).

Adding a task: one module with a ``Task`` subclass, and one line here.
"""

from __future__ import annotations

import importlib

# name -> "module:Class"
TASKS: dict[str, str] = {
    "xnli": "tasks.xnli:XNLI",
    "pawsx": "tasks.pawsx:PAWSX",
    "xquad": "tasks.xquad:XQuAD",
    "mlqa": "tasks.mlqa:MLQA",
    "tydiqa": "tasks.tydiqa:TyDiQA",
    "ncls": "tasks.ncls:NCLS",
    "scisummnet_zh": "tasks.scisummnet_zh:ScisummNetZh",
    "cloze": "tasks.own_data:Cloze",  # a user's own files (--train-file ...), no code
    "seq2seq": "tasks.own_data:Seq2Seq",
}


def get(name: str):
    """The task class registered as ``name`` (case-insensitive)."""
    key = name.lower()
    if key not in TASKS:
        raise ValueError(f"--task {name!r}: unknown task; expected one of {', '.join(sorted(TASKS))}")
    module, cls = TASKS[key].split(":")
    return getattr(importlib.import_module(module), cls)
