"""Rank-0 logger and metrics writer."""

import contextlib
import io
import json

from training.logging import MetricsWriter, get_logger


def test_logger_follows_stdout_redirection():
    log = get_logger(0)  # created (or reused) before the redirection, as in a long-lived process
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        log.info("line for the redirected stream")
    assert "line for the redirected stream" in buf.getvalue()


def test_non_zero_rank_drops_info():
    log = get_logger(3)
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            log.info("hidden")
            log.warning("shown")
    finally:
        get_logger(0)
    assert "hidden" not in buf.getvalue() and "shown" in buf.getvalue()


def test_metrics_jsonl_and_rank_gating(tmp_path):
    w = MetricsWriter(tmp_path, rank=0, tensorboard=False)
    w.scalars("train", {"loss": 1.5, "nan": float("nan"), "none": None}, step=3)
    w.close()
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["group"] == "train" and rows[0]["step"] == 3 and rows[0]["loss"] == 1.5
    assert "nan" not in rows[0] and "none" not in rows[0]  # non-finite values are not written as invalid JSON
    MetricsWriter(tmp_path / "r1", rank=1, tensorboard=False).scalars("train", {"loss": 1.0}, step=1)
    assert not (tmp_path / "r1").exists()


def test_resume_purges_the_repeated_steps_from_metrics_jsonl(tmp_path):
    """A run resumed at step 4 repeats steps 4..: their old rows go, earlier rows and other lines stay."""
    w = MetricsWriter(tmp_path, rank=0, tensorboard=False)
    for step in range(1, 7):
        w.scalars("train", {"loss": float(step)}, step=step)
    w.close()
    with open(tmp_path / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write("not json\n")
    w = MetricsWriter(tmp_path, rank=0, tensorboard=False, purge_step=4)
    w.scalars("train", {"loss": 40.0}, step=4)
    w.close()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert "not json" in lines
    rows = [json.loads(x) for x in lines if x != "not json"]
    assert [(r["step"], r["loss"]) for r in rows] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0)]


def test_a_restarted_writer_never_reuses_the_previous_event_file(tmp_path):
    """tensorboardX names event files by the second: a resumed run starting within the same second as the
    one it resumes must still write a file of its own and leave the first one's events intact."""
    first = MetricsWriter(tmp_path, rank=0)
    first.scalars("train", {"loss": 1.0}, step=1)
    first.close()
    (old,) = list(tmp_path.glob("events.out.tfevents*"))
    size = old.stat().st_size
    second = MetricsWriter(tmp_path, rank=0, purge_step=2)
    second.scalars("train", {"loss": 2.0}, step=2)
    second.close()
    files = list(tmp_path.glob("events.out.tfevents*"))
    assert len(files) == 2 and old.stat().st_size == size


def test_rates_print_to_three_significant_figures_and_json_keeps_them_whole(tmp_path):
    """ms_per_step used to print 4 decimals below 100 ms and 1 above (95.1234 next to 255.3)."""
    from training.logging import format_line

    def shown(line: str, key: str) -> str:
        return dict(part.split(" ", 1) for part in line.split(" | ")[1:])[key]

    cases = {95.12345: "95.1", 255.34: "255", 1234.56: "1235", 8.1234: "8.12", 0.0123456: "0.0123"}
    for value, text in cases.items():
        line = format_line(3, 10, {"loss": 5.4321, "ms_per_step": value, "tokens_per_s": value * 10})
        assert shown(line, "ms_per_step") == text, line
        assert shown(line, "loss") == "5.4321"
    assert shown(format_line(1, 1, {"tokens_per_s": 8123.7}), "tokens_per_s") == "8124"
    w = MetricsWriter(tmp_path, rank=0, tensorboard=False)
    w.scalars("train", {"ms_per_step": 95.12345, "tokens_per_s": 8123.7}, step=1)
    w.close()
    row = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert row["ms_per_step"] == 95.12345 and row["tokens_per_s"] == 8123.7
