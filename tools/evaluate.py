"""Score a QA predictions file against a dataset file, like the official scripts.

    python tools/evaluate.py squad DATASET PRED [--out FILE]        # = evaluate-v1.1.py DATASET PRED
    python tools/evaluate.py mlqa DATASET PRED LANG [--out FILE]    # = mlqa_evaluation_v1.py DATASET PRED LANG
    python tools/evaluate.py mglm DATASET PRED [DATASET PRED ...]   # mGLM's pooled unidecode metric

The last stdout line is ``json.dumps({"exact_match": ..., "f1": ...})`` on the 0-100 scale (``mglm`` adds
``"questions"``). PRED is a JSON object ``{question_id: answer}``. Bad input is one line on stderr
(``common.errors.run_cli``): exit 2 for a usage error (a missing file, an unknown language, an odd number of
``mglm`` paths), 1 for a data error (a file that is not UTF-8, not JSON, not a SQuAD-format dataset or not a
predictions object; an output file that cannot be written).
Questions without a prediction score 0 (``squad``/``mlqa``) and are reported on stderr.
Imports only the standard library, ``common.errors`` and ``tasks.metrics`` so that it starts in tens of
milliseconds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as ``python tools/X.py`` from any directory: the root is not on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.errors import DataError, UsageError, run_cli  # noqa: E402  (after the sys.path fix above)
from tasks import metrics  # noqa: E402


def _load_json(path: str, what: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} file not found: {path}") from None
    except IsADirectoryError:
        raise IsADirectoryError(f"{what} file is a directory: {path}") from None
    except OSError as exc:
        raise DataError(f"cannot read {what} file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{what} file {path} is not UTF-8 text: byte {exc.start}: {exc.reason}") from None
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{what} file {path} is not valid JSON: line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None


def _load_dataset(path: str, expected_version: str | None) -> Any:
    dataset = _load_json(path, "dataset")
    if not isinstance(dataset, dict):
        raise DataError(
            f"{path}: not a SQuAD-format dataset: expected a top-level JSON object "
            f'{{"version": ..., "data": [...]}}, got {metrics.json_type_name(dataset)}'
        )
    try:
        metrics.read_squad_questions(dataset, source=path)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    version = dataset.get("version")
    if expected_version is not None and str(version) != expected_version:
        # The official scripts warn and carry on.
        print(f"Evaluation expects v-{expected_version}, but got dataset with v-{version}", file=sys.stderr)
    return dataset


def _load_predictions(path: str) -> Any:
    preds = _load_json(path, "predictions")
    try:
        return metrics.validate_predictions(preds, source=path)
    except ValueError as exc:
        raise DataError(str(exc)) from None


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evaluate.py", description="Official SQuAD v1.1 / MLQA EM-F1, and mGLM's pooled metric."
    )
    sub = parser.add_subparsers(dest="mode", required=True, metavar="{squad,mlqa,mglm}")
    p = sub.add_parser("squad", help="SQuAD v1.1 (XQuAD, TyDiQA-GoldP), like evaluate-v1.1.py")
    p.add_argument("dataset_file", help="the gold SQuAD-format JSON (e.g. xquad.de.json)")
    p.add_argument("prediction_file", help="{question id: answer} JSON (e.g. predictions/xquad-dev-de.json)")
    p.add_argument("--out", help="also write the JSON result to this file")
    p = sub.add_parser("mlqa", help="MLQA, like mlqa_evaluation_v1.py")
    p.add_argument("dataset_file", help="the gold MLQA JSON (e.g. dev-context-de-question-de.json)")
    p.add_argument("prediction_file", help="{question id: answer} JSON (e.g. predictions/mlqa-dev-de.json)")
    p.add_argument("answer_language", help=f"one of {', '.join(metrics.MLQA_LANGUAGES)}")
    p.add_argument("--out", help="also write the JSON result to this file")
    p = sub.add_parser("mglm", help="Multilingual-GLM's pooled unidecode metric (needs unidecode)")
    p.add_argument("files", nargs="+", metavar="DATASET PRED", help="dataset/prediction file pairs")
    p.add_argument("--out", help="also write the JSON result to this file")
    return parser


def _run(args: argparse.Namespace) -> dict[str, Any]:
    if args.mode == "squad":
        dataset = _load_dataset(args.dataset_file, "1.1")
        preds = _load_predictions(args.prediction_file)
        return metrics.squad_evaluate(dataset, preds, source=args.dataset_file)
    if args.mode == "mlqa":
        if args.answer_language not in metrics.MLQA_LANGUAGES:
            raise UsageError(
                f"unknown language code {args.answer_language!r}; "
                f"valid: {', '.join(metrics.MLQA_LANGUAGES)}"
            )
        dataset = _load_dataset(args.dataset_file, "1.0")
        preds = _load_predictions(args.prediction_file)
        return metrics.mlqa_evaluate(dataset, preds, args.answer_language, source=args.dataset_file)
    # mglm
    if len(args.files) % 2:
        raise UsageError(f"mglm expects DATASET PRED pairs; got {len(args.files)} paths")
    datasets: dict[str, Any] = {}
    predictions: dict[str, Any] = {}
    for dataset_file, pred_file in zip(args.files[::2], args.files[1::2], strict=True):
        datasets[dataset_file] = _load_dataset(dataset_file, expected_version=None)
        predictions[dataset_file] = _load_predictions(pred_file)
    try:
        return metrics.mglm_evaluate(datasets, predictions)
    except ImportError as exc:  # the optional unidecode package: the mode the user chose needs it
        raise UsageError(str(exc)) from None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse ``argv``, score, print the JSON result as the last stdout line; return it."""
    args = _build_parser().parse_args(argv)
    result = _run(args)
    text = json.dumps(result)
    if args.out:
        try:
            with open(args.out, "w", encoding="utf-8") as f:
                f.write(text + "\n")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:  # the path typed is wrong
            raise UsageError(f"cannot write output file {args.out}: {exc.strerror or exc}") from None
        except OSError as exc:  # permission, disk full
            raise DataError(f"cannot write output file {args.out}: {exc.strerror or exc}") from None
    print(text)
    return result


if __name__ == "__main__":
    run_cli(main, "evaluate.py")
