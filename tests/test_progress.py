"""common.progress: a tqdm bar on a terminal, plain periodic lines (no carriage returns) in a log file."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
from conftest import REPO, SAMPLE_CORPUS, SAMPLE_TOKENIZER

from common.progress import PlainProgress, plain_interval, report_progress
from mpu import ParallelState
from tasks.base import evaluate


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class _Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_plain_lines_every_interval_then_a_last_one() -> None:
    out, clock = io.StringIO(), _Clock()
    bar = PlainProgress(total=10, desc="tokenizing", unit="doc", stream=out, every_s=30.0, clock=clock)
    for _ in range(10):  # one unit every 10 s: lines at 30, 60 and 90 s, and the last one at close
        clock.t += 10.0
        bar.update(1)
    bar.set_postfix(loss="1.5000")
    bar.close()
    bar.close()  # a second close writes nothing
    assert out.getvalue().splitlines() == [
        "tokenizing: 3/10 doc (30%), 30s elapsed, ~70s left",
        "tokenizing: 6/10 doc (60%), 60s elapsed, ~40s left",
        "tokenizing: 9/10 doc (90%), 90s elapsed, ~10s left",
        "tokenizing: 10/10 doc (100%), 100s elapsed, loss=1.5000",
    ]


def test_short_job_writes_nothing_and_unknown_total_counts() -> None:
    out, clock = io.StringIO(), _Clock()
    quick = PlainProgress(range(3), desc="dev-de", unit="batch", stream=out, every_s=30.0, clock=clock)
    assert list(quick) == [0, 1, 2] and out.getvalue() == ""
    bar = PlainProgress(desc="reading", unit=" sentences", stream=out, every_s=5.0, clock=clock)
    clock.t += 7.0
    bar.update(42)
    assert out.getvalue() == "reading: 42 sentences, 7s elapsed\n"


def test_terminal_gets_a_tqdm_bar_and_a_file_gets_no_carriage_return() -> None:
    tty = _Terminal()
    with report_progress(range(5), total=5, desc="eval", stream=tty, mininterval=0) as bar:
        for _ in bar:
            pass
    assert "\r" in tty.getvalue()  # the redraws that a log file must not get
    log = io.StringIO()
    bar = report_progress(total=5, desc="eval", stream=log)
    assert isinstance(bar, PlainProgress)
    assert report_progress(range(2), stream=log, plain=False).__class__.__name__ == "_Off"
    assert list(report_progress(range(2), enabled=False)) == [0, 1]


def test_interval_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("MGLM_PROGRESS_SECONDS", "0")
    assert plain_interval() == 0.0
    monkeypatch.setenv("MGLM_PROGRESS_SECONDS", "soon")
    with pytest.raises(ValueError, match="MGLM_PROGRESS_SECONDS='soon'"):
        plain_interval()


def test_task_evaluation_writes_plain_lines_to_a_non_terminal(capsys, monkeypatch) -> None:
    """The finetuning evaluation loop (the demo log's ``dev-xx: 0%| 0/1`` fragments) through the helper."""
    monkeypatch.setenv("MGLM_PROGRESS_SECONDS", "0")
    preds = evaluate(lambda batch: [str(x * 2) for x in batch], list(range(5)), 2, ParallelState.single(),
                     desc="dev-de")
    assert preds == ["0", "2", "4", "6", "8"]
    err = capsys.readouterr().err
    assert "\r" not in err
    assert err.splitlines()[0].startswith("dev-de: 1/3 batch (33%)")
    assert err.splitlines()[-1].startswith("dev-de: 3/3 batch (100%)")


def test_preprocessing_log_file_has_no_progress_fragments(tmp_path) -> None:
    """``python tools/preprocess_data.py ... 2> log``: plain lines, never a carriage return."""
    env = {**os.environ, "MGLM_PROGRESS_SECONDS": "0"}
    with open(tmp_path / "log", "w") as log:
        subprocess.run([sys.executable, str(REPO / "tools" / "preprocess_data.py"), str(SAMPLE_CORPUS / "de.jsonl"),
                        "-o", str(tmp_path / "store"), "--tokenizer-model", str(SAMPLE_TOKENIZER)],
                       stdout=log, stderr=subprocess.STDOUT, env=env, check=True, timeout=120)
    text = (tmp_path / "log").read_text()
    assert "\r" not in text
    assert any(line.startswith("tokenizing: ") and " doc, " in line for line in text.splitlines()), text


def test_a_line_of_the_caller_postpones_the_next_plain_line() -> None:
    """The training loop's own log lines say how far it is: a plain line is due 30 s after the last line
    of either kind, so frequent log lines get no progress lines in between."""
    out, clock = io.StringIO(), _Clock()
    bar = PlainProgress(total=100, desc="train", unit="step", stream=out, every_s=30.0, clock=clock)
    clock.t += 25.0
    bar.update(1)
    bar.clear()  # the loop prints its interval line at 25 s
    clock.t += 25.0
    bar.update(1)  # 50 s: 30 s since the start, but only 25 s since the log line
    assert out.getvalue() == ""
    clock.t += 6.0
    bar.update(1)
    assert out.getvalue() == "train: 3/100 step (3%), 56s elapsed, ~1811s left\n"
    clock.t += 10.0
    bar.update(1)
    bar.clear()  # the loop's last line says where it ended: closing adds none
    bar.close()
    assert out.getvalue().count("\n") == 1


class _Engine:
    """The engine interface the loop drives, with nothing behind it."""

    def train(self) -> None:
        pass

    def backward(self, loss) -> None:
        pass

    def step(self, lr: float):
        from types import SimpleNamespace

        return SimpleNamespace(boundary=True, grad_norm=1.0, loss_scale=None, applied=True)


def test_training_loop_reports_progress_in_a_log_file_before_its_first_log_line(capsys, monkeypatch) -> None:
    """Under nohup / a cluster's job log the steps before the first --log-interval line used to print
    nothing (the bar was for terminals only): now plain lines, no carriage returns."""
    import torch

    from training.loop import LoopConfig, LoopState, train

    monkeypatch.setenv("MGLM_PROGRESS_SECONDS", "0")  # a line per step: the test cannot wait 30 s

    def batches(start: int):
        while True:
            yield {"text": torch.zeros(1, 4, dtype=torch.long)}

    cfg = LoopConfig(train_iters=6, log_interval=4, eval_interval=100, save_interval=100, exit_signal_save=False,
                     objectives=("task",))
    state = train(_Engine(), ParallelState.single(), cfg, LoopState(), lambda step: 1e-3,
                  lambda eng, batch: (torch.tensor(2.0), "task"), batches)
    captured = capsys.readouterr()
    assert state.step == 6 and "step 4/6 | loss 2.0000" in captured.out
    assert "\r" not in captured.err
    lines = captured.err.splitlines()
    assert lines[0].startswith("train: 1/6 step (17%), 0s elapsed") and lines[0].endswith("loss=2.0000"), lines
    assert lines[-1].startswith("train: 6/6 step (100%)"), lines
