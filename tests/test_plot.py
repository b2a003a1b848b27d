"""tools/plot.py: PNGs of a run's metrics.jsonl and of a finetuning run's per-language results."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("matplotlib")

from tools.plot import main, plot_run, read_metrics  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def _pretrain_run(root):
    """metrics.jsonl rows as training.logging.MetricsWriter writes them for a pretraining run."""
    rows = []
    for step in range(10, 110, 10):
        rows.append({"group": "train", "step": step, "time": 0.0, "loss": 9 - step / 50, "loss_bert": 8.5 - step / 40,
                     "loss_gpt": 9.5 - step / 60, "loss_sentence": 9.2 - step / 55, "lr": 1e-4 * (1 - step / 200)})
        if step % 50 == 0:
            rows.append({"group": "valid", "step": step, "time": 0.0, "loss": 8 - step / 100, "ppl": 2000.0 / step,
                         "loss_bert": 7.9, "ppl_bert": 2600.0})
    (root / "logs").mkdir(parents=True)
    (root / "logs" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def _size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")  # IHDR width, height


def test_pretraining_run_gives_training_and_validation_pngs(tmp_path, capsys) -> None:
    run = _pretrain_run(tmp_path / "pre")
    out = main([str(run)])
    assert out["plots"] == [str(run / "plots" / "training.png"), str(run / "plots" / "validation.png")]
    for p in out["plots"]:
        w, h = _size(run / "plots" / p.split("/")[-1])
        assert w > 600 and h > 300
    assert "wrote" in capsys.readouterr().out
    assert not (run / "plots" / "scores.png").exists()  # no finetuning results.json


def test_finetuning_run_gives_a_per_language_bar_chart(tmp_path) -> None:
    run = tmp_path / "ft"
    (run / "logs").mkdir(parents=True)
    (run / "logs" / "metrics.jsonl").write_text(
        json.dumps({"group": "train", "step": 2, "time": 0, "loss": 1.1, "lr": 1e-5}) + "\n"
        + json.dumps({"group": "valid", "step": 2, "time": 0, "accuracy_de": 40.0, "accuracy_en": 50.0,
                      "accuracy_avg": 45.0, "best_accuracy": 50.0}) + "\n")
    dev = {"de": {"accuracy": 40.0}, "en": {"accuracy": 50.0}, "fr": {"accuracy": 48.0}, "avg": {"accuracy": 46.0},
           "pooled": {"accuracy": 44.0}}
    test = {"de": {"accuracy": 38.0}, "en": {"accuracy": 52.0}, "avg": {"accuracy": 45.0}}
    (run / "results.json").write_text(json.dumps({"task": "xnli", "metric": "accuracy", "dev": dev, "test": test}))
    written = plot_run(run, tmp_path / "pngs")
    assert [p.name for p in written] == ["training.png", "validation.png", "scores.png"]
    assert all(p.parent == tmp_path / "pngs" and p.stat().st_size > 5000 for p in written)


def test_errors_name_the_file_and_line(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="neither logs/metrics.jsonl"):
        plot_run(tmp_path)
    bad = tmp_path / "metrics.jsonl"
    bad.write_text('{"group": "train", "step": 1}\nnot json\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: not a JSON line"):
        read_metrics(bad)
