"""Task table and data readers of the mT5 baseline (no Transformers here: plain Python records).

A task/subtask pair names a list of training sources and a list of validation sources; a source is a
spec ``dataset:lang[:size]``. ``size`` with |size| < 1 is a fraction of the rows, otherwise a row count;
positive takes the head of the file, negative the tail (so ``scisummnet:zh:0.8`` and
``scisummnet:zh:-0.2`` split one file 80/20 without overlap: both counts are rounded down).

Files, relative to ``data_dir`` (the layout of the original script's ``../data``):

- ``scisummnet/scisummnet.csv``: columns ``text`` (English paper), ``zh_sum`` (Chinese summary); the split
  is ignored, the size spec does the split.
- ``ncls/ncls_en2zh_{train,val}.csv``: columns ``text``, ``en_sum``, ``zh_sum``; ``lang`` picks the summary.
  Without the CSV, the NCLS release's ``ncls/EN2ZHSUM_{train,valid}.txt`` (``<EN-REF>`` / ``<ZH-REF>``).
- ``mtg_sum/{train,dev.annotation}.doc.<src>`` and ``.sum.<tgt>``: one document / summary per line,
  ``lang`` is ``<src>2<tgt>`` and only ``tgt = zh`` exists.

The prompt of the target language is appended to the source text (``" 中文摘要："`` for Chinese,
``" Please summarize in English:"`` for English); whitespace runs in texts are collapsed to one space.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from common.errors import DataError
from tasks.summarization import read_csv_columns, read_ncls_raw

PROMPTS = MappingProxyType({"zh": " 中文摘要：", "en": " Please summarize in English:"})

# task -> subtask -> (train sources, valid sources); reference tasks_finetune_eval.md section 5.2.
TASKS = MappingProxyType(
    {
        "ncls": MappingProxyType(
            {
                "multitask": (("ncls:zh", "ncls:en"), ("ncls:zh",)),
                "sum2zh": (("ncls:zh",), ("ncls:zh",)),
                "sum2en": (("ncls:en",), ("ncls:en",)),
                "sci_eval": (("ncls:zh",), ("scisummnet:zh",)),
            }
        ),
        "scisummnet": MappingProxyType(
            {
                "simple": (("scisummnet:zh:0.8",), ("scisummnet:zh:-0.2",)),
                "ncls_mixed": (("scisummnet:zh:0.8", "ncls:zh:19200"), ("scisummnet:zh:-0.2",)),
            }
        ),
        "mtgcrosssum": MappingProxyType(
            {
                "S-en-T-zh-V-all": (
                    ("mtgcrosssum:en2zh",),
                    ("mtgcrosssum:de2zh", "mtgcrosssum:fr2zh", "mtgcrosssum:es2zh", "mtgcrosssum:zh2zh"),
                ),
            }
        ),
    }
)


@dataclass(frozen=True)
class Example:
    """One summarization pair; ``lang`` is the summary's language (it picks the prompt and the ROUGE mode)."""

    text: str
    summary: str
    lang: str

    @property
    def prompt(self) -> str:
        return PROMPTS[self.lang]


@dataclass(frozen=True)
class Source:
    dataset: str
    lang: str
    size: float | None = None


def task_sources(task: str, subtask: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(train specs, valid specs) of a task; unknown names raise ValueError listing the valid ones."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
    if subtask not in TASKS[task]:
        raise ValueError(f"unknown subtask {subtask!r} of task {task!r}; valid subtasks: {', '.join(TASKS[task])}")
    return TASKS[task][subtask]


def parse_source(spec: str) -> Source:
    """``dataset:lang[:size]`` -> Source."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"source spec {spec!r}: expected dataset:lang[:size]")
    size = None
    if len(parts) == 3:
        try:
            size = float(parts[2])
        except ValueError:
            raise ValueError(f"source spec {spec!r}: size {parts[2]!r} is not a number") from None
        if size == 0:
            raise ValueError(f"source spec {spec!r}: size must not be 0")
    return Source(parts[0], parts[1], size)


def take(rows: list, size: float | None) -> list:
    """Head (size > 0) or tail (size < 0) of ``rows``: a fraction when |size| < 1, else a count."""
    if size is None:
        return rows
    n = int(len(rows) * abs(size)) if abs(size) < 1 else int(abs(size))
    if size > 0:
        return rows[:n]
    return rows[len(rows) - n :] if n else []


def _clean(text: str) -> str:
    return " ".join(text.split())


def _read_csv(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    """Rows of a CSV with a header (the reader shared with the GLM summarization tasks)."""
    return [row for _, row in read_csv_columns(path, columns)]


def read_scisummnet(data_dir: Path, lang: str, split: str) -> list[Example]:
    """ScisummNet with Chinese summaries; one file for every split (the size spec splits it)."""
    if lang != "zh":
        raise ValueError(f"scisummnet has Chinese summaries only (lang 'zh'), got {lang!r}")
    rows = _read_csv(data_dir / "scisummnet" / "scisummnet.csv", ("text", "zh_sum"))
    return [Example(_clean(r["text"]), _clean(r["zh_sum"]), "zh") for r in rows]


def read_ncls(data_dir: Path, lang: str, split: str) -> list[Example]:
    """NCLS En2Zh; ``lang`` zh -> Chinese summaries, en -> English summaries of the same articles.

    The original's CSV when present, else the NCLS release file ``EN2ZHSUM_{train,valid}.txt`` in the same
    folder, read by the GLM NCLS task's reader (``tasks.summarization.read_ncls_raw``) so that mT5 and mGLM
    can be compared on the same released files (that reader also standardises curly quotes and dashes)."""
    if lang not in ("zh", "en"):
        raise ValueError(f"ncls summaries are 'zh' or 'en', got {lang!r}")
    path = data_dir / "ncls" / f"ncls_en2zh_{'train' if split == 'train' else 'val'}.csv"
    raw = data_dir / "ncls" / f"EN2ZHSUM_{'train' if split == 'train' else 'valid'}.txt"
    if not path.is_file():
        if not raw.is_file():
            raise FileNotFoundError(f"data file not found: {path} (nor the NCLS release's {raw.name} next to it; check --data-dir)")
        return [Example(_clean(e.source), _clean(e.summary), lang) for e in read_ncls_raw(raw, split, "en2zh", lang)]
    rows = _read_csv(path, ("text", f"{lang}_sum"))
    return [Example(_clean(r["text"]), _clean(r[f"{lang}_sum"]), lang) for r in rows]


def read_mtgcrosssum(data_dir: Path, lang: str, split: str) -> list[Example]:
    """MTG cross-lingual summarization line files; ``lang`` is ``<src>2<tgt>``, target zh only."""
    src, sep, tgt = lang.partition("2")
    if not sep or not src or tgt != "zh":
        raise ValueError(f"mtgcrosssum language {lang!r}: expected <src>2zh (only Chinese targets exist)")
    stem = data_dir / "mtg_sum" / ("train" if split == "train" else "dev.annotation")
    docs_path, sums_path = Path(f"{stem}.doc.{src}"), Path(f"{stem}.sum.{tgt}")
    for p in (docs_path, sums_path):
        if not p.is_file():
            raise FileNotFoundError(f"data file not found: {p} (check --data-dir)")
    docs = docs_path.read_text(encoding="utf-8").splitlines()
    sums = sums_path.read_text(encoding="utf-8").splitlines()
    if len(docs) != len(sums):
        raise DataError(f"{docs_path} has {len(docs)} lines but {sums_path} has {len(sums)}; expected one summary per document")
    return [Example(_clean(d), _clean(s), tgt) for d, s in zip(docs, sums, strict=True)]


READERS = MappingProxyType({"scisummnet": read_scisummnet, "ncls": read_ncls, "mtgcrosssum": read_mtgcrosssum})


def read_source(data_dir: str | Path, spec: str, split: str) -> list[Example]:
    """Examples of one source spec for ``split`` ('train' or 'valid')."""
    src = parse_source(spec)
    if src.dataset not in READERS:
        raise ValueError(f"source spec {spec!r}: unknown dataset; expected one of {', '.join(READERS)}")
    return take(READERS[src.dataset](Path(data_dir), src.lang, split), src.size)


def load_task(task: str, subtask: str, data_dir: str | Path) -> tuple[list[Example], list[Example]]:
    """(train examples, valid examples) of a task, in file order (the trainer shuffles, seeded)."""
    train_specs, valid_specs = task_sources(task, subtask)
    train = [ex for spec in train_specs for ex in read_source(data_dir, spec, "train")]
    valid = [ex for spec in valid_specs for ex in read_source(data_dir, spec, "valid")]
    if not train or not valid:
        raise DataError(f"task {task}/{subtask} in {data_dir}: {len(train)} training and {len(valid)} validation examples; need at least one of each")
    return train, valid
