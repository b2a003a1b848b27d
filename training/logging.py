"""Rank-0 logging: a readable line per interval, TensorBoard scalars (tensorboardX) and a JSONL copy.

Only global rank 0 writes; other ranks get a logger that drops INFO so a 64-GPU run prints one line per
interval, not 64. Every scalar goes to TensorBoard under ``<group>/<name>`` and, with the step, as one
JSON object per line in ``metrics.jsonl`` so results can be read without TensorBoard.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from pathlib import Path

LOGGER_NAME = "mglm"


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is at emit time (not the one at creation): pytest's capture,
    a notebook or a tool that redirects stdout after the logger was first made still sees the lines."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, _value):  # StreamHandler.__init__ assigns it; the property always follows sys.stdout
        pass


def get_logger(rank: int = 0) -> logging.Logger:
    """The project logger; INFO on rank 0, WARNING elsewhere. Idempotent."""
    log = logging.getLogger(LOGGER_NAME)
    if not any(isinstance(h, _StdoutHandler) for h in log.handlers):
        h = _StdoutHandler()
        h.setFormatter(logging.Formatter("[%(asctime)s] %(message)s", datefmt="%H:%M:%S"))
        log.addHandler(h)
        log.propagate = False
    log.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    return log


class MetricsWriter:
    """TensorBoard + JSONL scalars, written by rank 0 only (a no-op object on other ranks)."""

    def __init__(self, log_dir: str | os.PathLike | None, rank: int = 0, tensorboard: bool = True, purge_step: int | None = None):
        self.enabled = rank == 0 and log_dir is not None
        self._tb = None
        self._jsonl = None
        if not self.enabled:
            return
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if tensorboard:
            from tensorboardX import SummaryWriter

            # tensorboardX names the event file by the second and the host only: a resumed run that starts
            # within the same second as the run it resumes would reopen (and truncate) that run's file.
            self._tb = SummaryWriter(logdir=str(self.log_dir), purge_step=purge_step,
                                     filename_suffix=f".{os.getpid()}.{time.time_ns()}")
        jsonl = self.log_dir / "metrics.jsonl"
        if purge_step is not None and jsonl.is_file():
            _drop_rows_from(jsonl, purge_step)
        self._jsonl = open(jsonl, "a", encoding="utf-8")

    def scalars(self, group: str, values: dict[str, float], step: int) -> None:
        if not self.enabled:
            return
        clean = {k: float(v) for k, v in values.items() if v is not None and math.isfinite(float(v))}
        if self._tb is not None:
            for k, v in clean.items():
                self._tb.add_scalar(f"{group}/{k}", v, step)
        self._jsonl.write(json.dumps({"group": group, "step": step, "time": round(time.time(), 3), **clean}) + "\n")
        self._jsonl.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._jsonl is not None:
            self._jsonl.close()
        self._tb = self._jsonl = None


def _drop_rows_from(path: Path, step: int) -> None:
    """A resumed run repeats the steps after its checkpoint: drop their rows (as TensorBoard's purge_step
    does for events) so ``metrics.jsonl`` holds each step once. Rewritten atomically; unreadable lines
    are kept as they are."""
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        try:
            row_step = json.loads(line).get("step")
        except (json.JSONDecodeError, AttributeError):
            row_step = None
        if not (isinstance(row_step, int) and row_step >= step):
            kept.append(line)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(kept), encoding="utf-8")
    os.replace(tmp, path)


RATES = ("ms_per_step", "tokens_per_s")  # shown to 3 significant figures (timings are noisy beyond that)


def significant(v: float, figures: int = 3) -> str:
    """``v`` to ``figures`` significant figures in positional notation, the digits before the point never
    rounded away: 0.00812, 8.12, 81.2, 812, 8124 (for 3). The decimals are ``figures - 1 - floor(log10|v|)``,
    at least 0."""
    if v == 0.0 or not math.isfinite(v):
        return f"{v:.0f}"  # 0, nan, inf
    return f"{v:.{max(0, figures - 1 - math.floor(math.log10(abs(v))))}f}"


def format_line(step: int, total: int, values: dict[str, float | None]) -> str:
    """``step 120/1000 | loss 5.4321 | lr 1.000e-04 | ... | ms_per_step 255`` with sensible number formats:
    the rates in ``RATES`` to 3 significant figures, lr and tiny values in exponent form, others 4 decimals
    (1 from 100 up). Only the printed line is rounded; TensorBoard and metrics.jsonl get the values as they are."""
    parts = [f"step {step}/{total}"]
    for k, v in values.items():
        if v is None:
            continue
        if isinstance(v, float) and k in RATES:
            parts.append(f"{k} {significant(v)}")
        elif isinstance(v, float) and (k == "lr" or abs(v) < 1e-3 and v != 0.0):
            parts.append(f"{k} {v:.3e}")
        elif isinstance(v, float):
            parts.append(f"{k} {v:.4f}" if abs(v) < 100 else f"{k} {v:.1f}")
        else:
            parts.append(f"{k} {v}")
    return " | ".join(parts)
