"""Summarization shared by ``ncls``, ``scisummnet_zh`` and the mT5 baseline: the example type, the data
readers, mGLM's punctuation standardisation, the prompt and ROUGE in three named tokenisations.

Readers (each error names the file and line and what was expected):

- ``read_ncls_raw``: the NCLS release files ``EN2ZHSUM_{train,valid,test}.txt`` / ``ZH2ENSUM_*.txt``
  (Zhu et al., 2019). Records are pseudo-XML: a line ``<Article>`` is followed by the article on the next line;
  a line ``<EN-REF...>`` or ``<ZH-REF...>`` is followed by one summary sentence; ``</doc>`` closes a
  record. The target language's reference sentences are joined into one summary (Chinese without a
  separator, English with a space); where a record carries human-corrected references
  (``<ZH-REF-...-human-corrected>``, the test sets) those replace the automatic ones.
- ``read_alternating``: mGLM's converted layout ``{train,dev,test}.txt``: line 2k is a source, line 2k+1 its
  summary (mGLM's ``NCLSProcessor``).
- ``read_scisummnet_zh``: ScisummNet with Chinese summaries: ``{"pid": ..., "zh_sum": ...}`` lines (JSON or
  Python-dict syntax, as mGLM's ``scisummnet-zh.txt``) plus the English papers, either the ScisummNet release
  (``top1000_complete/<pid>/Documents_xml/<pid>.xml``: every ``<S>`` of every ``<SECTION>``, or of the whole
  paper when it has no ``<SECTION>``; the reader logs how many papers did) or the mT5
  baseline's ``scisummnet.csv`` (columns ``pid``, ``text``).

Every text goes through ``punctuation_standardization`` (mGLM: curly quotes to straight, en dash to
hyphen) and has its whitespace runs collapsed.

ROUGE (``summary_rouge``): ROUGE-1/2/L F, the mean over examples of the per-example F, x100, in three
tokenisations, each named in the key: ``char`` (CJK characters are tokens, other scripts words;
``tasks/rouge.py``), ``word`` (``\\w+`` runs) and ``mglm`` (ids of the run's sentencepiece tokenizer, as the
mGLM README numbers, which used ``rouge_score`` on space-joined mglm250k ids). Keys ``rouge-1_char``,
``rouge-2_word``, ``rouge-l_mglm``, ...; the unsuffixed ``rouge-1``, ``rouge-2``, ``rouge-l`` repeat the
primary tokenisation (char for Chinese targets, word for English, or ``--rouge-tokenization``).
"""

from __future__ import annotations

import ast
import csv
import io
import json
import logging
import re
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

from common.errors import DataError
from tasks.base import read_utf8
from tasks.seq2seq import GenerationOptions, GenerationTask
from training.logging import LOGGER_NAME

# The cue before the blank, by target language (mGLM ``tasks/seq2seq/pvp.py``; full-width colon).
PROMPTS = MappingProxyType({"zh": " 中文摘要：", "en": " tl;dr:"})
# direction -> (source language, target language)
DIRECTIONS = MappingProxyType({"en2zh": ("en", "zh"), "zh2en": ("zh", "en")})
ROUGE_TOKENIZATIONS = ("char", "word", "mglm")
# Primary ROUGE tokenisation by target language: characters for Chinese, words otherwise.
PRIMARY_TOKENIZATION = MappingProxyType({"zh": "char", "en": "word"})

_PUNCTUATION = str.maketrans({"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'", "\u2013": "-"})
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


@dataclass(frozen=True)
class SummaryExample:
    """One source document with its summary (None: unlabelled)."""

    uid: str  # "<split>-<lang>-<index>", stable across runs
    lang: str  # the results key: a direction (en2zh, zh2en) or the target language
    source: str
    summary: str | None
    tgt_lang: str  # language of the summary: picks the prompt cue and the primary ROUGE tokenisation
    location: str  # "file:line" of the record, for error messages


def punctuation_standardization(text: str) -> str:
    """mGLM's ``punctuation_standardization``: curly double/single quotes -> ``"`` / ``'``, en dash -> ``-``."""
    return text.translate(_PUNCTUATION)


def clean_text(text: str) -> str:
    """Punctuation standardisation, then whitespace runs collapsed to one space (and stripped)."""
    return " ".join(punctuation_standardization(text).split())


def has_cjk(text: str) -> bool:
    return _CJK.search(text) is not None


# ------------------------------------------------------------------------------------------ readers
def read_alternating(path: Path, split: str, lang: str, tgt_lang: str) -> list[SummaryExample]:
    """mGLM's layout: even lines (0-based) are sources, odd lines their summaries.

    An odd number of lines, or an empty source or summary, is a ValueError naming the file and line."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    lines = read_utf8(path).split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it does not start another
    if len(lines) % 2:
        raise DataError(f"{path}: {len(lines)} lines, an odd number; expected source/summary line pairs "
                        f"(line {len(lines)} is a source without a summary)")
    out = []
    for i in range(0, len(lines), 2):
        source, summary = clean_text(lines[i]), clean_text(lines[i + 1])
        if not source:
            raise DataError(f"{path}:{i + 1}: empty source; expected the document text (even lines are sources)")
        if not summary:
            raise DataError(f"{path}:{i + 2}: empty summary; expected the summary of the source on line {i + 1}")
        out.append(SummaryExample(f"{split}-{lang}-{i // 2}", lang, source, summary, tgt_lang, f"{path}:{i + 1}"))
    return out


_TAG = re.compile(r"^<\s*(/?)\s*([A-Za-z]+(?:-[A-Za-z0-9]+)*)[^>]*>\s*(.*)$")


def read_ncls_raw(path: Path, split: str, lang: str, tgt_lang: str) -> list[SummaryExample]:
    """The NCLS release's pseudo-XML (module docstring). The summary is the ``<ZH-REF...>`` sentences for
    ``tgt_lang`` zh (human-corrected ones when present), the ``<EN-REF...>`` sentences for en."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    want = "ZH-REF" if tgt_lang == "zh" else "EN-REF"
    joiner = "" if tgt_lang == "zh" else " "
    out: list[SummaryExample] = []
    lines = read_utf8(path).splitlines()
    record: dict = {}

    def close(lineno: int) -> None:
        if not record:
            return
        where = f"{path}:{record['start']}"
        if record.get("article") is None:
            raise DataError(f"{where}: record without an <Article> line (the record closing on line {lineno}); "
                            "expected <Article> followed by the article text (the Zh2EnSum test file ships "
                            "without sources: join them from LCSTS first)")
        sents = record["corrected"] or record["refs"]
        summary = clean_text(joiner.join(sents))
        if not summary:
            raise DataError(f"{where}: record without a <{want}...> summary sentence; expected at least one")
        out.append(SummaryExample(f"{split}-{lang}-{len(out)}", lang, record["article"], summary, tgt_lang, where))
        record.clear()

    i = 0
    while i < len(lines):
        line = lines[i].strip()
        lineno = i + 1
        m = _TAG.match(line)
        i += 1
        if m is None:
            if line:
                raise DataError(f"{path}:{lineno}: text outside a tag; expected <Article>, <EN-REF...>, "
                                f"<ZH-REF...> or </doc> lines (the text goes on the line after its tag)")
            continue
        closing, name, rest = m.group(1), m.group(2).upper(), m.group(3)
        if closing:
            if name == "DOC":
                close(lineno)
            continue
        if name == "DOC":
            close(lineno)
            continue
        if not record:
            record.update(start=lineno, article=None, refs=[], corrected=[])
        if name in ("ARTICLE",) or name.startswith(("EN-REF", "ZH-REF")):
            text = rest
            if not text:  # the text sits on the next line
                if i >= len(lines) or not lines[i].strip():
                    raise DataError(f"{path}:{lineno}: <{m.group(2)}> is not followed by a text line")
                text = lines[i].strip()
                i += 1
            if name == "ARTICLE":
                record["article"] = clean_text(text)
                if not record["article"]:
                    raise DataError(f"{path}:{lineno}: empty article")
            elif name.startswith(want):
                record["corrected" if name.endswith("HUMAN-CORRECTED") else "refs"].append(text)
        # other tags (titles, ids) carry nothing we use
    close(len(lines))
    return out


def read_csv_columns(path: Path, columns: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) of a CSV file with a header; the named columns must exist and be filled in."""
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path} (check --data-dir)")
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # whole papers in one cell exceed csv's 128 KiB default
    # decoded whole: bad bytes are named with their line; a byte-order mark (Excel's CSV) is not in a name
    with io.StringIO(read_utf8(path).removeprefix("\ufeff"), newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)}; header is {reader.fieldnames}")
        rows = []
        for row in reader:
            lineno = reader.line_num
            if any(row.get(c) is None for c in columns):
                raise DataError(f"{path}:{lineno}: row has fewer fields than the header")
            if None in row:  # csv.DictReader puts the fields beyond the header's under the key None
                raise DataError(f"{path}:{lineno}: {len(reader.fieldnames) + len(row[None])} fields, more than "
                                f"the {len(reader.fieldnames)} columns of the header {reader.fieldnames} "
                                "(an unquoted comma in a text?)")
            rows.append((lineno, row))
    return rows


def scisummnet_xml_text(path: Path) -> tuple[str, bool]:
    """The text of a ScisummNet paper and whether it fell back to the whole document.

    The text is every ``<S>`` of every ``<SECTION>``, in order, joined by spaces (mGLM concatenates them
    without a separator, which glues the sentences together). Some papers have no ``<SECTION>`` at all (their
    ``<S>`` sit directly under ``<PAPER>``: 63 of the 978 CL-SciSumm copies); for them the text is every
    ``<S>`` of the document, in order, and the second value is True so that the reader can say how many."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise DataError(f"{path}: not well-formed XML ({e}); expected a ScisummNet Documents_xml file") from None
    sections = list(root.iter("SECTION"))
    nodes = [s for sec in sections for s in sec.iter("S")] if sections else list(root.iter("S"))
    sents = [" ".join("".join(s.itertext()).split()) for s in nodes]
    return clean_text(" ".join(s for s in sents if s)), not sections


def parse_record(line: str, where: str) -> dict:
    """One ``{"pid": ..., "zh_sum": ...}`` line: JSON, or a Python dict literal as mGLM writes it."""
    try:
        rec = json.loads(line)
    except json.JSONDecodeError:
        try:
            rec = ast.literal_eval(line)
        except (ValueError, SyntaxError):
            raise DataError(f"{where}: not a JSON object or Python dict; expected {{\"pid\": ..., \"zh_sum\": ...}}") from None
    if not isinstance(rec, dict) or "pid" not in rec or "zh_sum" not in rec:
        raise DataError(f"{where}: expected a record with keys 'pid' and 'zh_sum', got {str(rec)[:80]!r}")
    return rec


def read_scisummnet_zh(records: Path, data_dir: Path, split: str, lang: str, keep: Callable[[int], bool] = lambda n: True
                       ) -> list[SummaryExample]:
    """ScisummNet-zh records of ``records`` whose 1-based record number passes ``keep``, with their English
    sources from ``data_dir/top1000_complete`` (preferred) or ``data_dir/scisummnet.csv``."""
    if not records.is_file():
        raise FileNotFoundError(f"{records}: file not found")
    xml_dir = data_dir / "top1000_complete"
    csv_path = data_dir / "scisummnet.csv"
    csv_text: dict[str, str] | None = None
    out = []
    whole_document: list[str] = []  # papers without <SECTION>: their source is every <S> of the paper
    n = 0
    for lineno, line in enumerate(read_utf8(records).splitlines(), 1):
        if not line.strip():
            continue
        n += 1
        if not keep(n):
            continue
        where = f"{records}:{lineno}"
        rec = parse_record(line, where)
        pid, summary = str(rec["pid"]), clean_text(str(rec["zh_sum"]))
        if not summary:
            raise DataError(f"{where}: empty zh_sum of paper {pid}")
        xml = xml_dir / pid / "Documents_xml" / f"{pid}.xml"
        if xml.is_file():
            source, fell_back = scisummnet_xml_text(xml)
            if fell_back:
                whole_document.append(pid)
        else:
            if csv_text is None:
                csv_text = ({r["pid"]: r["text"] for _, r in read_csv_columns(csv_path, ("pid", "text"))}
                            if csv_path.is_file() else {})
            if pid not in csv_text:
                raise FileNotFoundError(f"{where}: no English source of paper {pid}: expected {xml} or a row "
                                        f"with pid {pid} in {csv_path}")
            source = clean_text(csv_text[pid])
        if not source:
            raise DataError(f"{where}: the English source of paper {pid} is empty")
        out.append(SummaryExample(f"{split}-{lang}-{len(out)}", lang, source, summary, "zh", where))
    if whole_document:
        logging.getLogger(LOGGER_NAME).info(
            f"{records} ({split}): {len(whole_document)} of {len(out)} papers have no <SECTION> in their XML; "
            f"their source is every <S> of the document ({', '.join(whole_document[:5])}"
            f"{', ...' if len(whole_document) > 5 else ''})")
    return out


# ------------------------------------------------------------------------------------------ prompt
def summary_source_ids(tokenizer, source: str, tgt_lang: str, seq_length: int) -> list[int]:
    """``[CLS] encode(" " + source)[:seq_length - 1 - P] encode(cue) [sMASK]`` with P = cue tokens + 1
    (mGLM ``pvp.py``): the source is cut, the cue and the blank always stay; the blank is the last token."""
    cue = tokenizer.encode(PROMPTS[tgt_lang])
    budget = seq_length - 1 - (len(cue) + 1)
    if budget < 1:
        raise ValueError(f"--seq-length {seq_length}: too short for [CLS], the cue {PROMPTS[tgt_lang]!r} "
                         f"({len(cue)} tokens), [sMASK] and at least one source token")
    return [tokenizer.cls_id, *tokenizer.encode(" " + source)[:budget], *cue, tokenizer.smask_id]


# ------------------------------------------------------------------------------------------ ROUGE
def rouge_metric_names() -> tuple[str, ...]:
    base = ("rouge-1", "rouge-2", "rouge-l")
    return base + tuple(f"{m}_{t}" for t in ROUGE_TOKENIZATIONS for m in base)


def summary_rouge(predictions: Sequence[str], references: Sequence[str], primary: str,
                  encode: Callable[[str], list[int]] | None) -> dict[str, float]:
    """ROUGE-1/2/L F (per-example mean, x100) in every tokenisation (module docstring); ``encode``: the
    tokenizer for ``mglm`` (None leaves the mglm keys out)."""
    from tasks.rouge import rouge_scores, rouge_scores_from_tokens

    if primary not in ROUGE_TOKENIZATIONS:
        raise ValueError(f"ROUGE tokenization {primary!r}: expected one of {', '.join(ROUGE_TOKENIZATIONS)}")
    preds, refs = list(predictions), list(references)
    by: dict[str, dict[str, float]] = {t: rouge_scores(preds, refs, t) for t in ("char", "word")}
    if encode is not None:
        by["mglm"] = rouge_scores_from_tokens([[str(i) for i in encode(p)] for p in preds],
                                              [[str(i) for i in encode(r)] for r in refs])
    if primary not in by:
        raise ValueError("ROUGE tokenization 'mglm' needs the tokenizer")
    out = dict(by[primary])
    for t, scores in by.items():
        out.update({f"{k}_{t}": v for k, v in scores.items()})
    return out


def one_line(text: str) -> str:
    """A text as one line of a .pred.txt / .ref.txt file: line breaks become spaces, nothing else changes."""
    return " ".join(text.splitlines())


# ------------------------------------------------------------------------------------------ task
@dataclass(frozen=True)
class SummarizationOptions(GenerationOptions):
    """Summarization (ncls, scisummnet_zh; seq2seq with ROUGE): the generation options and ROUGE's tokenisation."""

    rouge_tokenization: str | None = None  # primary ROUGE: char | word | mglm (default: by target language)

    TITLE: ClassVar[str] = "summarization (the task's own options)"
    HELP: ClassVar[dict[str, str]] = {
        **GenerationOptions.HELP,
        "rouge_tokenization": "the tokenisation of the unsuffixed rouge-1/2/l (char | word | mglm = tokenizer "
                              "ids); default char for Chinese summaries, word otherwise; every one is also reported "
                              "as rouge-*_<tokenisation>",
    }

    def validate(self, finetune: Any) -> None:
        super().validate(finetune)
        if self.rouge_tokenization is not None and self.rouge_tokenization not in ("char", "word", "mglm"):
            raise ValueError(f"--rouge-tokenization {self.rouge_tokenization!r}: expected char, word or mglm")


class SummarizationTask(GenerationTask):
    """A generation task over ``SummaryExample``: the prompt of ``summary_source_ids``, the summary as the
    target, ROUGE in every tokenisation, predictions and references written as text files.

    ``flag_defaults``: finetuning flags the task sets when the command line does not give them
    (``tasks.cli.parse_finetune_args``); mGLM's NCLS decoding (``seq_ncls.sh``)."""

    metric_name = "rouge-l"
    metric_names = rouge_metric_names()
    options_cls: ClassVar[type] = SummarizationOptions
    flag_defaults = MappingProxyType({
        "seq_length": 768, "tgt_seq_length": 160, "min_tgt_length": 100, "num_beams": 5,
        "length_penalty": 0.7, "no_repeat_ngram_size": 3, "label_smoothing": 0.1, "select_on": "avg-dev",
    })

    def source_ids(self, example: SummaryExample) -> list[int]:
        return summary_source_ids(self.tokenizer, example.source, example.tgt_lang, self.seq_length)

    def target_text(self, example: SummaryExample) -> str | None:
        return example.summary

    def gold(self, example: SummaryExample) -> str | None:
        return example.summary

    def rouge_primary(self, tgt_lang: str) -> str:
        given = getattr(self.options, "rouge_tokenization", None) if self.options is not None else None
        return given or PRIMARY_TOKENIZATION.get(tgt_lang, "word")

    def metrics(self, preds: Sequence[str], examples: Sequence[SummaryExample]) -> dict[str, float]:
        """ROUGE of one list; the primary tokenisation is that of the examples' target language (a pooled
        list of several target languages uses char, which scores words of spaced scripts as words too)."""
        langs = {e.tgt_lang for e in examples}
        primary = self.rouge_primary(langs.pop() if len(langs) == 1 else "zh")
        return summary_rouge(preds, [e.summary for e in examples], primary, self.tokenizer.encode)

    def prediction_records(self, examples, preds) -> list[dict]:
        return [{"idx": e.uid, "prediction": p, "reference": e.summary} for e, p in zip(examples, preds, strict=True)]

    def write_extra_predictions(self, folder: Path, split: str, lang: str, examples, preds) -> None:
        """``<task>-<split>-<lang>.pred.txt`` and ``.ref.txt``: one line per example, in the same order."""
        write_text_predictions(folder / f"{self.name}-{split}-{lang}", preds, [e.summary or "" for e in examples])


def write_text_predictions(stem: Path, preds: Sequence[str], refs: Sequence[str]) -> None:
    """``<stem>.pred.txt`` and ``<stem>.ref.txt``: one line per example, in the same order."""
    with open(f"{stem}.pred.txt", "w", encoding="utf-8") as w:
        w.writelines(one_line(p) + "\n" for p in preds)
    with open(f"{stem}.ref.txt", "w", encoding="utf-8") as w:
        w.writelines(one_line(r) + "\n" for r in refs)
