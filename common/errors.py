"""The errors every entry script turns into one line on stderr, and the wrapper that does it.

Two kinds of bad input, two exit codes (those of argparse and of most Unix tools):

- **usage errors**, exit 2: a flag or value the user typed is wrong (a missing path, an unknown input type,
  ``--seq-length`` above the model's positions, an output that already exists). ``UsageError``; a plain
  ``ValueError`` or a ``FileNotFoundError`` (the path was typed) count as usage errors too.
- **data errors**, exit 1: a file exists but its content is bad (broken JSON, a truncated array, token ids
  outside the vocabulary, bytes that are not UTF-8, a read or write that the system refuses). ``DataError``;
  ``UnicodeDecodeError`` and every other ``OSError`` count as data errors.

The line is ``<prog>: error: <message>``; the message names the file (and line or field) itself. Anything
else is a bug and keeps its traceback. ``MGLM_DEBUG=1`` prints the traceback of a handled error too.

In a run of several processes (``torch.distributed`` initialised, or ``WORLD_SIZE`` > 1 from torchrun / the
deepspeed launcher) a ``UsageError`` is a check of the command line, which every rank makes identically: it is
printed by global rank 0 only (the others exit with the same code, silently), instead of once per GPU.
Every other handled error may be one rank's own (a file missing on one node, one rank's full disk), so it is
printed by the rank that hit it, prefixed ``[rank N]``. Command-line parsing errors follow the same rule:
the multi-process entry scripts build their parsers from ``ArgumentParser`` below, whose usage message
appears once (rank 0) instead of once per process.
This module imports nothing heavy: ``tools/evaluate.py`` imports no torch (``tests/test_evaluate_cli.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback

EXIT_DATA = 1
EXIT_USAGE = 2


class UsageError(ValueError):
    """A flag or value the user gave is wrong (exit 2). A ValueError, so existing handlers still catch it."""


class DataError(ValueError):
    """A file's content is bad (exit 1); the message names the file (and line or field)."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, except that a command-line error is printed by global rank 0 only: every rank
    parses the same command line, so the other ranks exit with the same code (2) silently."""

    def error(self, message: str):  # type: ignore[override]
        rank, world = rank_and_world()
        if world > 1 and rank != 0:
            sys.exit(EXIT_USAGE)
        super().error(message)


def read_json_object(path: str | os.PathLike, what: str) -> dict:
    """The JSON object in ``path``; broken JSON, bytes that are not UTF-8 or another top-level type are a
    DataError naming the file (and the line of a JSON error) and ``what`` it is."""
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: broken {what} (invalid JSON: {e.msg} at column {e.colno})") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: broken {what} (byte {e.start} is not UTF-8)") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: broken {what}: expected a JSON object, got {type(obj).__name__}")
    return obj


def exit_code(exc: BaseException) -> int | None:
    """The exit code of an error that is the user's input, or None for a bug (which keeps its traceback)."""
    if isinstance(exc, DataError):
        return EXIT_DATA
    if isinstance(exc, UsageError):
        return EXIT_USAGE
    if isinstance(exc, UnicodeError):  # a ValueError, but always about a file's bytes
        return EXIT_DATA
    if isinstance(exc, (FileNotFoundError, NotADirectoryError, IsADirectoryError, ValueError)):
        return EXIT_USAGE
    if isinstance(exc, (OSError, EOFError)):  # permission, disk full, I/O error, truncated compressed file
        return EXIT_DATA
    return None


def one_line(exc: BaseException) -> str:
    """The message on one line (a multi-line message is joined with '; ')."""
    text = str(exc).strip() or type(exc).__name__
    return "; ".join(part.strip() for part in text.splitlines() if part.strip())


def rank_and_world() -> tuple[int, int]:
    """(global rank, world size): torch.distributed's when initialised (looked up only when already
    imported: this module imports nothing heavy), else the launcher's ``RANK`` / ``WORLD_SIZE``, else (0, 1)."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    try:
        return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 0, 1


def run_cli(main, prog: str) -> None:
    """Run an entry script's ``main()``; a bad input becomes ``<prog>: error: ...`` and exit code 1 or 2
    (in a multi-process run: a UsageError on rank 0 only, other errors with ``[rank N]``; module docstring)."""
    try:
        main()
    except Exception as e:
        code = exit_code(e)
        if code is None:
            raise
        rank, world = rank_and_world()
        if world > 1 and rank != 0 and isinstance(e, UsageError):
            sys.exit(code)
        if os.environ.get("MGLM_DEBUG") == "1":
            traceback.print_exc()
        prefix = f"[rank {rank}] " if world > 1 and not isinstance(e, UsageError) else ""
        print(f"{prefix}{prog}: error: {one_line(e)}", file=sys.stderr, flush=True)
        sys.exit(code)
