"""Tokenize raw multilingual corpora into mglm's memory-mapped token store (one per language).

    python tools/preprocess_data.py data/sample/corpus --tokenizer-model data/sample/tokenizer/mglm-sample.model \\
        --output data/sample/store --workers 4

Inputs: JSONL (``{"text": ..., "lang": ...}``), plain text (blank-line-separated documents), and the
Multilingual-GLM layout ``<lang>_*.json.gz``; see ``data_utils/corpus.py`` for the store format.
Bad records are skipped with a warning (file:line and reason) and counted in the summary and ``index.json``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as ``python tools/X.py`` from any directory: the root is not on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_utils.corpus import PreprocessSummary, preprocess  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    from training.arguments import DefaultsHelpFormatter

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=DefaultsHelpFormatter)
    ap.add_argument("inputs", nargs="+", help="input files or folders (.jsonl[.gz], .txt[.gz], <lang>_*.json.gz)")
    ap.add_argument("--output", "-o", required=True, help="store folder to create")
    ap.add_argument("--tokenizer-model", required=True, help="sentencepiece .model file")
    ap.add_argument("--lang", default=None, help="language of every input (overrides file names)")
    ap.add_argument("--workers", type=int, default=1, help="tokenizer processes")
    ap.add_argument("--chunk-docs", type=int, default=1024, help="documents per work item")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing store at --output")
    ap.add_argument("--no-progress", dest="progress", action="store_false", help="no progress display (a bar on a terminal, else a line every 30 s)")
    return ap


def main(argv: list[str] | None = None) -> PreprocessSummary:
    a = build_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    summary = preprocess(
        a.inputs, a.output, a.tokenizer_model, lang=a.lang, workers=a.workers, chunk_docs=a.chunk_docs,
        progress=a.progress, overwrite=a.overwrite,
    )
    print(summary.format(), flush=True)
    return summary


if __name__ == "__main__":
    from common.errors import run_cli

    run_cli(main, "preprocess_data.py")
