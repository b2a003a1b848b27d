"""ScisummNet with Chinese summaries (English ACL papers -> Chinese summary), mGLM's ``AlltoZHProcessor``
data without the NCLS part (mGLM ``tasks/seq2seq/``; kept apart from ``ncls``). Results key: ``en2zh``.

Data (``--data-dir``):

- records: ``scisummnet-zh.txt``, one ``{"pid": ..., "zh_sum": ...}`` per line (JSON or Python-dict syntax);
  split as mGLM splits it: records 1-799 train, records 801 to the end dev **and** test (the same papers: mGLM
  evaluates on its dev set; record 800 is in neither). Per-split files ``scisummnet-zh.{train,dev,test}.txt``,
  when present, are used instead (and a missing test file then means no test scores);
- English sources: ``top1000_complete/<pid>/Documents_xml/<pid>.xml`` (the ScisummNet release; every ``<S>``
  of every ``<SECTION>``; a paper without ``<SECTION>`` gives every ``<S>`` of the document, and the run logs
  how many did) or, for papers without an XML file, ``scisummnet.csv`` with columns ``pid`` and ``text``
  (the mT5 baseline's file).

Prompt, decoding defaults and ROUGE as ``ncls`` (``tasks/summarization.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tasks.summarization import SummarizationTask, SummaryExample, read_scisummnet_zh

RECORDS = "scisummnet-zh.txt"
TRAIN_LAST = 799  # mGLM: records 1..799 train
EVAL_FIRST = 801  # mGLM: records 801.. dev and test


class ScisummNetZh(SummarizationTask):
    name = "scisummnet_zh"
    languages = ("en2zh",)
    train_language = "en2zh"

    def read_split(self, data_dir: Path, split: str, languages: Sequence[str] | None) -> dict[str, list[SummaryExample]]:
        lang = self.train_language
        if languages is not None and any(x != lang for x in languages):
            raise ValueError(f"--languages {' '.join(languages)}: scisummnet_zh has one key, {lang!r}")
        per_split = data_dir / f"scisummnet-zh.{split}.txt"
        if any((data_dir / f"scisummnet-zh.{s}.txt").is_file() for s in ("train", "dev", "test")):
            if not per_split.is_file():
                if split == "test":
                    return {}
                raise FileNotFoundError(f"{per_split}: file not found (the folder has per-split record files)")
            examples = read_scisummnet_zh(per_split, data_dir, split, lang)
        else:
            whole = data_dir / RECORDS
            if not whole.is_file():
                raise FileNotFoundError(f"{data_dir}: expected {RECORDS} (or scisummnet-zh.{{train,dev,test}}.txt)")
            keep = (lambda n: n <= TRAIN_LAST) if split == "train" else (lambda n: n >= EVAL_FIRST)
            examples = read_scisummnet_zh(whole, data_dir, split, lang, keep)
        if not examples:
            raise ValueError(f"{data_dir}: no {split} records (mGLM's split: records 1-{TRAIN_LAST} train, "
                             f"{EVAL_FIRST}+ dev and test)")
        return {lang: examples}
