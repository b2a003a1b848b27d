"""PNG plots of a pretraining or finetuning run.

    python tools/plot.py RUN_DIR [--out DIR]

Reads ``RUN_DIR/logs/metrics.jsonl`` (the JSON lines ``training.logging.MetricsWriter`` writes: ``group``
``train`` / ``valid``, ``step`` and scalars) and, for finetuning runs, ``RUN_DIR/results.json``; writes into
``RUN_DIR/plots/`` (or ``--out``):

    training.png     training loss (all objectives, and each of bert / sentence / gpt when logged) and the
                     learning rate against steps
    validation.png   validation loss and perplexity per objective against steps (pretraining); dev scores
                     per language against steps (finetuning)
    scores.png       finetuning: the task metric per language on dev and test as bars, with each split's
                     unweighted language average as a line

matplotlib is optional (requirements-dev.txt); it is imported here only, with the Agg backend (no display).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as ``python tools/X.py`` from any directory: the root is not on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.errors import DataError, UsageError, read_json_object, run_cli  # noqa: E402
from data_utils.blank_infilling import MODES  # noqa: E402

OBJECTIVES = ("loss", *(f"loss_{m}" for m in MODES))
SKIP_VALID = {"best_accuracy"}


def read_metrics(path: Path) -> dict[str, list[dict]]:
    """Rows of ``metrics.jsonl`` by group, in file order; a bad line is an error naming its number."""
    groups: dict[str, list[dict]] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{n}: not a JSON line ({e.msg})") from None
        if not isinstance(row, dict) or "step" not in row or "group" not in row:
            raise DataError(f"{path}:{n}: expected an object with 'group' and 'step'")
        groups.setdefault(row["group"], []).append(row)
    return groups


def _series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    pts = [(r["step"], float(r[key])) for r in rows if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    return [p[0] for p in pts], [p[1] for p in pts]


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise UsageError("matplotlib is not installed; pip install -r requirements-dev.txt (or matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _integer_steps(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are integers; short runs got 2.5, 3.5 ...


def _label(key: str) -> str:
    return "all objectives" if key in ("loss", "ppl") else key.split("_", 1)[1]


def plot_training(plt, rows: list[dict], out: Path, title: str) -> Path:
    fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(11, 4))
    for key in OBJECTIVES:
        steps, values = _series(rows, key)
        if steps:
            ax_loss.plot(steps, values, marker="o" if len(steps) < 30 else None, ms=3, label=_label(key),
                         lw=2.2 if key == "loss" else 1.3)
    ax_loss.set(xlabel="step", ylabel="training loss (cross entropy)", title="training loss per objective")
    ax_loss.legend()
    steps, values = _series(rows, "lr")
    ax_lr.plot(steps, values, color="tab:purple")
    ax_lr.set(xlabel="step", ylabel="learning rate", title="learning rate")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    for ax in (ax_loss, ax_lr):
        ax.grid(alpha=0.3)
        _integer_steps(ax)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_validation(plt, rows: list[dict], out: Path, title: str) -> Path:
    loss_keys = [k for k in OBJECTIVES if any(k in r for r in rows)]
    if loss_keys:  # pretraining: loss and perplexity per objective
        fig, (ax_loss, ax_ppl) = plt.subplots(1, 2, figsize=(11, 4))
        for key in loss_keys:
            steps, values = _series(rows, key)
            ax_loss.plot(steps, values, marker="o", ms=3, label=_label(key))
            steps, values = _series(rows, "ppl" + key[4:])
            ax_ppl.plot(steps, values, marker="o", ms=3, label=_label(key))
        ax_loss.set(xlabel="step", ylabel="validation loss", title="validation loss per objective")
        ax_ppl.set(xlabel="step", ylabel="perplexity (log scale)", title="validation perplexity", yscale="log")
        axes = (ax_loss, ax_ppl)
    else:  # finetuning: dev scores (<metric>_<lang>) per evaluation
        fig, ax = plt.subplots(figsize=(8, 4.5))
        keys = sorted({k for r in rows for k in r if k not in ("group", "step", "time") and k not in SKIP_VALID})
        for key in keys:
            steps, values = _series(rows, key)
            # the language mean and the pooled score stand out from the per-language lines
            style = ({"color": "black", "ls": "--", "lw": 2.2} if key.endswith("_avg") else
                     {"color": "dimgray", "ls": ":", "lw": 2.2} if key.endswith("_pooled") else {"lw": 1.2})
            ax.plot(steps, values, marker="o", ms=3, label=key, **style)
        ax.set(xlabel="step", ylabel="dev score", title="dev scores per language")
        ax.legend(fontsize=7, ncol=1 + len(keys) // 16, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        axes = (ax,)
    for ax in axes:
        ax.grid(alpha=0.3)
        _integer_steps(ax)
        if loss_keys:
            ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_scores(plt, results: dict, out: Path, title: str) -> Path:
    """Grouped bars: the task metric per language, dev and test, and each split's language average."""
    metric = results.get("metric")
    splits = [s for s in ("dev", "test") if isinstance(results.get(s), dict) and results[s]]
    langs = sorted({lang for s in splits for lang in results[s] if lang not in ("avg", "pooled")})
    if not metric or not langs:
        raise DataError("results.json holds no per-language scores ('metric', 'dev' / 'test')")
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(langs) + 2.5), 4.5))
    width = 0.8 / len(splits)
    colors = {"dev": "tab:blue", "test": "tab:orange"}
    for j, split in enumerate(splits):
        xs = [i + (j - (len(splits) - 1) / 2) * width for i in range(len(langs))]
        values = [results[split].get(lang, {}).get(metric, float("nan")) for lang in langs]
        ax.bar(xs, values, width, label=split, color=colors[split], alpha=0.85)
        avg = results[split].get("avg", {}).get(metric)
        if avg is not None:
            ax.axhline(avg, color=colors[split], ls="--", lw=1.5, label=f"{split} average {avg:.1f}")
    ax.set_xticks(range(len(langs)), langs)
    top = max((v.get(metric, 0.0) for s in splits for v in results[s].values() if isinstance(v, dict)), default=1.0)
    ax.set_ylim(0, 1.25 * top if top > 0 else 1.0)  # room above the bars for the legend
    ax.set(xlabel="language", ylabel=metric, title=f"{results.get('task', '')} {metric} per language")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper right", ncol=2)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Write every plot the run's files allow; returns the PNG paths."""
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"{run}: no such run directory")
    metrics = next((p for p in (run / "logs" / "metrics.jsonl", run / "metrics.jsonl") if p.is_file()), None)
    results_path = run / "results.json"
    results = read_json_object(results_path, "results.json") if results_path.is_file() else None
    finetune = isinstance(results, dict) and "metric" in results and isinstance(results.get("dev"), dict)
    if metrics is None and not finetune:
        raise FileNotFoundError(f"{run}: neither logs/metrics.jsonl nor a finetuning results.json to plot")
    plt = _pyplot()
    out = Path(out_dir) if out_dir else run / "plots"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if metrics is not None:
        groups = read_metrics(metrics)
        if groups.get("train"):
            written.append(plot_training(plt, groups["train"], out / "training.png", run.name))
        if groups.get("valid"):
            written.append(plot_validation(plt, groups["valid"], out / "validation.png", run.name))
    if finetune:
        written.append(plot_scores(plt, results, out / "scores.png", run.name))
    return written


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="tools/plot.py", description="PNG plots of a pretraining / finetuning run")
    p.add_argument("run_dir", help="the run's --save (or --log-dir) directory")
    p.add_argument("--out", help="output folder (default RUN_DIR/plots)")
    a = p.parse_args(argv)
    written = plot_run(a.run_dir, a.out)
    for path in written:
        print(f"wrote {path}")
    return {"plots": [str(w) for w in written]}


if __name__ == "__main__":
    run_cli(main, "plot.py")
