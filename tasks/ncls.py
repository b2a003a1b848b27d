"""NCLS cross-lingual summarization (Zhu et al., EMNLP 2019): En2ZhSum (English articles, Chinese
summaries) and Zh2EnSum (Chinese articles, English summaries), finetuned as mGLM does (its ``seq_ncls.sh``):

    [CLS] <article, cut to fit> " 中文摘要：" [sMASK]   ->  <sop> summary <eop>      (en2zh)
    [CLS] <article, cut to fit> " tl;dr:"   [sMASK]   ->  <sop> summary <eop>      (zh2en)

One direction per run; the direction is the "language" key of the results (``en2zh`` or ``zh2en``).

Data (``--data-dir``), either layout:

- the NCLS release: ``EN2ZHSUM_{train,valid,test}.txt`` or ``ZH2ENSUM_{...}.txt``, directly in the folder or
  in ``EN2ZHSUM/`` / ``ZH2ENSUM/`` below it (``valid`` is our ``dev``);
- mGLM's converted layout: ``{train,dev,test}.txt`` with alternating source / summary lines, in the folder
  or in a subfolder ``en2zh/`` / ``zh2en/``.

The direction comes from ``--ncls-direction en2zh|zh2en`` or, without it, from the files present: the
release's file prefix, the subfolder name, or for a bare ``{train,dev,test}.txt`` the script of the first
summary (Chinese characters: en2zh, else zh2en). Several candidates without the flag are an error. The
training and dev files must exist; a missing test file means no test scores.

Decoding defaults (``flag_defaults``; the command line wins): source 768 tokens, targets 160, beam 5,
length penalty 0.7, no repeated 3-grams, at least 100 tokens, label smoothing 0.1, selection on the dev
ROUGE-L (``avg-dev``: the one direction).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from common.errors import DataError, UsageError
from tasks.base import utf8_lines
from tasks.summarization import (
    DIRECTIONS,
    SummarizationOptions,
    SummarizationTask,
    SummaryExample,
    has_cjk,
    read_alternating,
    read_ncls_raw,
)

RAW_PREFIX = {"en2zh": "EN2ZHSUM", "zh2en": "ZH2ENSUM"}
RAW_SPLIT = {"train": "train", "dev": "valid", "test": "test"}
SPLITS = ("train", "dev", "test")


def raw_file(data_dir: Path, direction: str, split: str) -> Path | None:
    name = f"{RAW_PREFIX[direction]}_{RAW_SPLIT[split]}.txt"
    for p in (data_dir / name, data_dir / RAW_PREFIX[direction] / name):
        if p.is_file():
            return p
    return None


def alternating_file(data_dir: Path, direction: str | None, split: str) -> Path | None:
    cands = ([data_dir / direction / f"{split}.txt"] if direction else []) + [data_dir / f"{split}.txt"]
    return next((p for p in cands if p.is_file()), None)


def _first_summary(path: Path) -> str:
    with open(path, "rb") as f:
        lines = utf8_lines(f, path)
        next(lines, None)
        return next(lines, (0, ""))[1]


def detect_direction(data_dir: Path) -> str:
    """The direction the files of ``data_dir`` hold (module docstring)."""
    found: dict[str, str] = {}
    for d in DIRECTIONS:
        if any(raw_file(data_dir, d, s) for s in SPLITS):
            found.setdefault(d, f"{RAW_PREFIX[d]}_*.txt")
        if any((data_dir / d / f"{s}.txt").is_file() for s in SPLITS):
            found.setdefault(d, f"{d}/{{train,dev,test}}.txt")
    flat = next((data_dir / f"{s}.txt" for s in SPLITS if (data_dir / f"{s}.txt").is_file()), None)
    if flat is not None:
        d = "en2zh" if has_cjk(_first_summary(flat)) else "zh2en"
        found.setdefault(d, f"{flat.name} (summaries {'in' if d == 'en2zh' else 'not in'} Chinese)")
    if not found:
        raise FileNotFoundError(f"{data_dir}: no NCLS files; expected EN2ZHSUM_{{train,valid,test}}.txt, "
                                "ZH2ENSUM_{train,valid,test}.txt (NCLS release) or {train,dev,test}.txt "
                                "(alternating source/summary lines, optionally under en2zh/ or zh2en/)")
    if len(found) > 1:
        raise UsageError(f"{data_dir}: files of both directions ({'; '.join(f'{k}: {v}' for k, v in found.items())});"
                         " pass --ncls-direction en2zh or zh2en")
    return next(iter(found))


@dataclass(frozen=True)
class NCLSOptions(SummarizationOptions):
    """NCLS: the summarization options and the direction."""

    ncls_direction: str | None = None  # en2zh | zh2en (default: from the files in --data-dir)

    TITLE: ClassVar[str] = "ncls (the task's own options)"
    HELP: ClassVar[dict[str, str]] = {
        **SummarizationOptions.HELP,
        "ncls_direction": "en2zh or zh2en (default: the direction of the files in --data-dir)",
    }

    def validate(self, finetune: Any) -> None:
        super().validate(finetune)
        if self.ncls_direction is not None and self.ncls_direction not in ("en2zh", "zh2en"):
            raise ValueError(f"--ncls-direction {self.ncls_direction!r}: expected en2zh or zh2en")


class NCLS(SummarizationTask):
    name = "ncls"
    options_cls: ClassVar[type] = NCLSOptions
    languages = tuple(DIRECTIONS)
    train_language = "en2zh"

    def __init__(self, tokenizer, seq_length: int, pattern_id: int | None = None, options=None):
        super().__init__(tokenizer, seq_length, pattern_id, options)
        # Without --ncls-direction the files decide, when read_split first sees --data-dir (``direction``).
        self._direction = getattr(options, "ncls_direction", None) if options is not None else None
        if self._direction is not None:
            self.train_language = self._direction

    def expected_languages(self, split: str) -> tuple[str, ...]:
        """One direction per run: the other is not missing."""
        return (self.train_language,)

    def direction(self, data_dir: Path) -> str:
        if self._direction is None:
            self._direction = detect_direction(data_dir)
            self.train_language = self._direction
        return self._direction

    def split_file(self, data_dir: Path, split: str) -> tuple[Path | None, bool]:
        """(file of ``split``, whether it is in the NCLS release format)."""
        d = self.direction(data_dir)
        raw = raw_file(data_dir, d, split)
        return (raw, True) if raw is not None else (alternating_file(data_dir, d, split), False)

    def read_split(self, data_dir: Path, split: str, languages: Sequence[str] | None) -> dict[str, list[SummaryExample]]:
        d = self.direction(data_dir)
        if languages is not None and any(lang != d for lang in languages):
            raise ValueError(f"--languages {' '.join(languages)}: ncls results are keyed by the direction, here "
                             f"{d!r} (choose it with --ncls-direction)")
        path, raw = self.split_file(data_dir, split)
        if path is None:
            if split == "test":
                return {}
            raise FileNotFoundError(f"{data_dir}: no {split} file for {d}; expected {RAW_PREFIX[d]}_{RAW_SPLIT[split]}.txt "
                                    f"or {split}.txt (alternating source/summary lines)")
        reader = read_ncls_raw if raw else read_alternating
        examples = reader(path, split, d, DIRECTIONS[d][1])
        if not examples:
            raise DataError(f"{path}: no examples")
        return {d: examples}
