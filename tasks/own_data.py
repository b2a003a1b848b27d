"""Finetuning on a user's own files, without code: ``--task cloze`` and ``--task seq2seq``.

Data: ``--train-file`` / ``--dev-file`` / ``--test-file``, each JSON lines (``.jsonl``, ``.json``: one object
per line), CSV (``.csv``: a header row, standard quoting) or TSV (``.tsv``: a header row, tab-split with no
quote handling, as XTREME's files). A row's fields are looked up by name; ``--language-field`` (optional)
keys the dev/test scores per language (tables as the benchmarks'), without it every row counts as ``all``.
Training rows need a label (target); a dev or test file may carry none at all (no scores), but not for
some rows only. Every bad row is one error naming file and line.

Pattern (``--pattern``): text with ``{field}`` references and exactly one blank, parsed once
(``parse_pattern``) into parts, each tokenized on its own as the benchmarks' patterns are:

- a literal stretch of text is a fixed part (never cut);
- ``{field}`` is the row's value, a shortenable part: when the input is too long, the longest field is cut
  from its end, one token at a time (``tasks.base.fit_parts``; the benchmark tasks cut as mGLM, which
  empties the last field first, so an over-long row is cut differently there); whitespace in the pattern
  right before a field is tokenized with the field (``", {b}"`` gives ``","`` and ``" " + b``, as mGLM's
  PAWS-X pattern);
- the blank, ``[MASK]`` (cloze) or ``[sMASK]`` / ``[gMASK]`` (seq2seq). Whitespace right before it belongs
  to what fills it: ``"? [MASK]"`` makes the verbalizers ``" Yes"``, ``" No"`` (the leading-space word
  pieces mGLM's verbalizers are); a generated target is always encoded as ``" " + text``.

So ``--pattern '{sentence2}? [MASK], {sentence1}' --verbalizers 0=No,1=Yes`` is mGLM's PAWS-X pattern 1
for every row that fits ``--seq-length`` (up to its stripping of sentence 2's final punctuation, which a
user's file does itself if wanted).

cloze: ``[CLS] parts <eos> <sop>`` scored at the verbalizers (``ClozeClassificationTask``); labels are the
``--verbalizers`` keys in their order. seq2seq: ``[CLS] parts`` with the blank as the source of
``GenerationTask``; ``--metric rouge`` (ROUGE-1/2/L F in the three tokenisations of
``tasks.summarization.summary_rouge``; the primary one is ``--rouge-tokenization`` or char when the
references hold Chinese characters, else word) or ``squad`` (exact match and F1 of SQuAD v1.1; a JSONL
target may be a list of gold answers, the first one is trained on).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from common.errors import DataError, UsageError
from tasks.base import Task, fit_parts, read_tsv
from tasks.classification import MASK, ClozeClassificationTask
from tasks.seq2seq import GenerationTask
from tasks.summarization import SummarizationOptions

NO_LANGUAGE = "all"  # the results key of every row without --language-field
FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv"}
SPLIT_FLAGS = {"train": "--train-file", "dev": "--dev-file", "test": "--test-file"}
METRICS = ("rouge", "squad")

_PIECE = re.compile(r"\{([^{}]*)\}|\[(MASK|sMASK|gMASK)\]|[{}]")


# ------------------------------------------------------------------------------------------ pattern
@dataclass(frozen=True)
class Part:
    """One piece of a parsed pattern: ``kind`` literal (``text`` as written), field (``text`` = the field
    name, ``lead`` = the pattern's whitespace before it, tokenized with the value) or mask (``text`` = the
    blank token string)."""

    kind: str
    text: str
    lead: str = ""


@dataclass(frozen=True)
class Pattern:
    parts: tuple[Part, ...]
    mask_space: str  # the pattern's whitespace right before the blank ("" or e.g. " ")

    @property
    def mask(self) -> str:
        return next(p.text for p in self.parts if p.kind == "mask")

    def fields(self) -> list[str]:
        return [p.text for p in self.parts if p.kind == "field"]

    def texts(self, row: dict[str, str]) -> list[tuple[Any, bool]]:
        """``(text or MASK, shortenable)`` of one row, in order (the part lists of ``ClozeClassificationTask``)."""
        return [(MASK, False) if p.kind == "mask" else (p.lead + row[p.text], True) if p.kind == "field"
                else (p.text, False) for p in self.parts]


def parse_pattern(pattern: str, fields: Sequence[str], masks: Sequence[str], flag: str = "--pattern") -> Pattern:
    """Parse ``pattern`` once (module docstring). Errors, each naming the problem: a reference to a field not
    in ``fields``, a field of ``fields`` the pattern never uses (its text would be read and dropped), a
    stray brace, a blank other than ``masks``, no blank or more than one."""
    allowed = " or ".join(f"[{m}]" for m in masks)
    raw: list[Part] = []
    pos = 0
    for m in _PIECE.finditer(pattern):
        if m.start() > pos:
            raw.append(Part("literal", pattern[pos:m.start()]))
        pos = m.end()
        name, blank = m.group(1), m.group(2)
        if blank is not None:
            if blank not in masks:
                raise UsageError(f"{flag} {pattern!r}: [{blank}] at character {m.start() + 1}; this task's "
                                 f"blank is {allowed}")
            raw.append(Part("mask", f"[{blank}]"))
        elif name is None:
            raise UsageError(f"{flag} {pattern!r}: unmatched {m.group(0)!r} at character {m.start() + 1}; "
                             "fields are written {name}")
        elif name.strip() not in fields:
            raise UsageError(f"{flag} {pattern!r}: {{{name}}} names no field of the row; expected one of "
                             f"{', '.join('{' + f + '}' for f in fields)}")
        else:
            raw.append(Part("field", name.strip()))
    if pos < len(pattern):
        raw.append(Part("literal", pattern[pos:]))
    n_masks = sum(p.kind == "mask" for p in raw)
    if n_masks != 1:
        raise UsageError(f"{flag} {pattern!r}: {'no' if n_masks == 0 else n_masks} {allowed} blank(s); "
                         "expected exactly one")
    unused = [f for f in fields if f not in {p.text for p in raw if p.kind == "field"}]
    if unused:
        raise UsageError(f"{flag} {pattern!r} does not use the field(s) {', '.join(unused)}; name each "
                         "{field} in the pattern or leave it out of the field list")
    # Whitespace at the end of a literal goes with what follows it: a field's value, or the blank's filler.
    parts: list[Part] = []
    mask_space = ""
    for i, p in enumerate(raw):
        nxt = raw[i + 1] if i + 1 < len(raw) else None
        if p.kind == "literal" and nxt is not None and nxt.kind in ("field", "mask"):
            body = p.text.rstrip()
            space = p.text[len(body):]
            if nxt.kind == "field":
                raw[i + 1] = Part("field", nxt.text, space)
            else:
                mask_space = " " if space else ""
            p = Part("literal", body)
        if p.kind == "literal" and nxt is None:
            p = Part("literal", p.text.rstrip())  # trailing whitespace of the pattern carries nothing
        if p.kind != "literal" or p.text:
            parts.append(raw[i] if p.kind == "field" else p)
    return Pattern(tuple(parts), mask_space)


def split_list(value: str | None, flag: str) -> list[str]:
    """``"a,b"`` -> ``["a", "b"]``; an empty item, or no value, is an error."""
    if value is None:
        raise UsageError(f"{flag} is required for this task (see the README, 'Finetune on your own data')")
    items = [x.strip() for x in (value or "").split(",")]
    if not value or any(not x for x in items):
        raise UsageError(f"{flag} {value!r}: expected comma-separated names, e.g. premise,hypothesis")
    return items


def parse_verbalizers(value: str | None) -> dict[str, str]:
    """``"entailment=Yes,contradiction=No"`` -> ``{label: word}`` in the order given (the class index)."""
    out: dict[str, str] = {}
    for item in split_list(value, "--verbalizers"):
        label, eq, word = item.partition("=")
        if not eq or not label.strip() or not word.strip():
            raise UsageError(f"--verbalizers {value!r}: {item!r} is not label=word; expected e.g. "
                             "entailment=Yes,contradiction=No")
        if label.strip() in out:
            raise UsageError(f"--verbalizers {value!r}: label {label.strip()!r} is given twice")
        out[label.strip()] = word.strip()
    if len(out) < 2:
        raise UsageError(f"--verbalizers {value!r}: expected at least two labels")
    return out


# ------------------------------------------------------------------------------------------ reading
@dataclass(frozen=True)
class RecordExample:
    """One row of a user's file: the pattern's fields, the label (cloze: a label string; seq2seq: the gold
    targets, the first one trained on; None: unlabelled) and where it came from."""

    uid: str  # "<split>-<lang>-<index>"
    lang: str
    fields: dict[str, str]
    label: Any
    source: str  # "file:line"


def file_format(path: Path, flag: str) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UsageError(f"{flag} {path}: unknown file type {path.suffix or '(no suffix)'!r}; expected "
                         ".jsonl (JSON lines), .csv or .tsv, each with the field names (a CSV/TSV header row)")
    if not path.is_file():
        raise UsageError(f"{flag} {path}: file not found")
    return fmt


def _header(path: Path, fmt: str) -> list[str]:
    with open(path, "rb") as f:
        first = f.readline().decode("utf-8", errors="replace").rstrip("\r\n").removeprefix("\ufeff")
    if fmt == "tsv":
        return first.split("\t")
    return next(csv.reader(io.StringIO(first)), [])


def _value(v: Any, name: str, where: str, lists: bool = False) -> Any:
    """A JSON value as text: strings as they are, integers as digits (labels such as 0/1); a list of strings
    where ``lists`` (several gold targets); anything else is an error."""
    if isinstance(v, str):
        return v
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    if lists and isinstance(v, list) and v and all(isinstance(x, str) for x in v):
        return tuple(v)
    kind = "null" if v is None else type(v).__name__
    want = "a string or a list of strings" if lists else "a string"
    raise DataError(f"{where}: field {name!r} is {kind} ({str(v)[:40]}); expected {want}")


def read_rows(path: Path, flag: str, required: Sequence[str], optional: Sequence[str] = (),
              lists: Sequence[str] = ()) -> list[tuple[str, dict[str, Any]]]:
    """``("file:line", {field: value})`` of every row of a JSONL / CSV / TSV file, with the ``required``
    fields and those of ``optional`` the row has (CSV/TSV: a header column, its value possibly empty;
    JSONL: a key of the row). ``lists``: fields that may hold a JSON list of strings. A UTF-8 byte-order
    mark at the start of the file is ignored."""
    fmt = file_format(path, flag)
    rows: list[tuple[str, dict[str, Any]]] = []
    expect = f"fields {', '.join(required)}"
    if fmt == "jsonl":
        from tasks.base import utf8_lines

        with open(path, "rb") as f:
            for lineno, line in utf8_lines(f, path):
                if not line.strip():
                    continue
                where = f"{path}:{lineno}"
                try:
                    obj = json.loads(line.removeprefix("\ufeff") if lineno == 1 else line)  # a BOM (Windows)
                except json.JSONDecodeError as e:
                    raise DataError(f"{where}: not valid JSON ({e.msg} at column {e.colno}); expected one JSON "
                                    f"object per line with {expect}") from None
                if not isinstance(obj, dict):
                    raise DataError(f"{where}: a JSON {type(obj).__name__}, not an object; expected one object "
                                    f"per line with {expect}")
                missing = [k for k in required if k not in obj]
                if missing:
                    raise DataError(f"{where}: no field(s) {', '.join(missing)} (the row has "
                                    f"{', '.join(obj) or 'none'}); expected {', '.join(required)}")
                # an optional field is read wherever a row has it (the caller checks it is in all or none)
                rows.append((where, {k: _value(obj[k], k, where, k in lists) for k in (*required, *optional)
                                     if k in obj}))
        return rows
    head = _header(path, fmt)
    missing = [k for k in required if k not in head]
    if missing:
        raise DataError(f"{path}:1: the header {head} has no column(s) {', '.join(missing)}; expected a header "
                        f"row naming the {expect} (a file without a header row?)")
    want = list(required) + [o for o in optional if o in head]
    try:
        if fmt == "csv":
            from tasks.summarization import read_csv_columns

            return [(f"{path}:{lineno}", {k: row[k] for k in want}) for lineno, row in read_csv_columns(path, want)]
        return [(f"{path}:{lineno}", dict(zip(want, values, strict=True)))
                for lineno, values in read_tsv(path, want, header=True, expect=expect)]
    except DataError:
        raise
    except ValueError as e:  # a short or long row of the shared readers: the file's content, not a flag
        raise DataError(str(e)) from None


# ---------------------------------------------------------------------------------------- options
_FILE_HELP = {
    "train_file": "training file, JSON lines (.jsonl) or CSV/TSV (.csv/.tsv) with a header row",
    "dev_file": "dev file (model selection, dev scores); same formats",
    "test_file": "test file (labels optional); same formats",
    "language_field": "field holding each row's language; dev/test are scored per language",
}


@dataclass(frozen=True)
class FileOptions:
    """The files of a user's own data and the row fields every own-data task reads."""

    train_file: str | None = None  # JSONL, CSV or TSV with a header row
    dev_file: str | None = None
    test_file: str | None = None
    language_field: str | None = None  # dev/test scored per language of this field
    pattern: str | None = None  # "{premise}? [MASK], {hypothesis}" (seq2seq: [sMASK] or [gMASK])

    def validate(self, finetune: Any) -> None:
        """The files and the shared flags that go with them (``finetune``: the run's FinetuneArgs)."""
        f, task = finetune, finetune.task
        other = ["--data-dir"] if f.data_dir is not None else []
        if f.pattern_id is not None:
            other.append("--pattern-id (use --pattern)")
        if other:
            raise UsageError(f"{', '.join(other)}: not an option of --task {task}")
        if f.epochs > 0 and (self.train_file is None or self.dev_file is None):
            raise UsageError(f"--task {task} trains on --train-file and selects the model on --dev-file; give "
                             "both (or --epochs 0 to evaluate a --dev-file / --test-file only)")
        if self.dev_file is None and self.test_file is None:
            raise UsageError(f"--task {task}: nothing to evaluate; give --dev-file and/or --test-file")
        if f.languages and self.language_field is None:
            raise UsageError("--languages needs --language-field (the field holding each row's language)")
        for s, flag in SPLIT_FLAGS.items():
            if getattr(self, f"{s}_file") is not None:
                file_format(Path(getattr(self, f"{s}_file")), flag)


@dataclass(frozen=True)
class ClozeOptions(FileOptions):
    """``--task cloze``: the files, the pattern and the label words."""

    text_fields: str | None = None  # "premise,hypothesis"
    label_field: str | None = None
    verbalizers: str | None = None  # "entailment=Yes,contradiction=No" (label order = class index)

    TITLE: ClassVar[str] = "cloze: your own files (the task's own options)"
    HELP: ClassVar[dict[str, str]] = {
        **_FILE_HELP,
        "pattern": "text with {field}s and one [MASK], e.g. '{premise}? [MASK], {hypothesis}'",
        "text_fields": "the fields the pattern reads, comma-separated (cut from their end when too long)",
        "label_field": "the field holding the label",
        "verbalizers": "label=word pairs, e.g. entailment=Yes,contradiction=No; each word one token",
    }


@dataclass(frozen=True)
class Seq2SeqFileOptions(FileOptions, SummarizationOptions):
    """``--task seq2seq``: the files, the source and target fields, the metric and the generation options."""

    source_field: str | None = None
    target_field: str | None = None  # JSONL: a string or a list of gold answers
    metric: str | None = None  # rouge (default) | squad

    TITLE: ClassVar[str] = "seq2seq: your own files (the task's own options)"
    HELP: ClassVar[dict[str, str]] = {
        **SummarizationOptions.HELP, **_FILE_HELP,
        "pattern": "one [sMASK] or [gMASK] with {field}s (default '{SOURCE} [sMASK]')",
        "source_field": "the source field(s), comma-separated",
        "target_field": "the target field (JSONL: a string or a list of gold answers)",
        "metric": "rouge (ROUGE-1/2/L F, default) or squad (exact match, F1)",
    }

    def validate(self, finetune: Any) -> None:
        SummarizationOptions.validate(self, finetune)
        FileOptions.validate(self, finetune)


# ------------------------------------------------------------------------------------------ tasks
class OwnDataTask(Task):
    """What the two tasks share: the split files, the optional language field, the fields a pattern reads,
    and labels that are either a checked label (cloze) or targets (seq2seq)."""

    label_flag = "--label-field"
    absent_reason = "no rows"  # how finetune_glm words a language of the data that a split lacks
    masks: tuple[str, ...] = ("MASK",)
    label_lists = False  # a JSONL label may be a list of strings (several gold targets)
    reads_data_dir: ClassVar[bool] = False

    def __init__(self, tokenizer, seq_length: int, pattern_id: int | None = None, options: Any = None):
        self.opts = options
        self.seen: list[str] = []  # dev/test languages in the order first read: the tables' columns
        self.languages = ()
        self.train_language = NO_LANGUAGE
        super().__init__(tokenizer, seq_length, pattern_id, options)
        self.pattern_id = None  # results.json: these tasks have --pattern, not numbered patterns

    def data_source(self) -> str:
        """The files in words, for messages (what ``--data-dir`` is for the benchmark tasks)."""
        o = self.opts
        return ", ".join(f"{SPLIT_FLAGS[s]} {getattr(o, s + '_file')}" for s in SPLIT_FLAGS
                         if getattr(o, s + "_file", None)) or "no data files"

    def label_field(self) -> str:
        raise NotImplementedError

    def check_label(self, value: Any, where: str) -> Any:
        return value

    def expected_languages(self, split: str) -> tuple[str, ...]:
        """Every language of the dev and test files: one a split lacks is shown absent in its table."""
        return tuple(self.seen)

    def read_split(self, data_dir, split: str, languages: Sequence[str] | None) -> dict[str, list[RecordExample]]:
        o = self.opts
        path = getattr(o, f"{split}_file", None)
        if path is None:
            if split == "train":
                raise UsageError("--train-file FILE is required to train (or pass --epochs 0 to evaluate only)")
            return {}
        path = Path(path)
        flag = SPLIT_FLAGS[split]
        lang_field = o.language_field
        label = self.label_field()
        optional = (label,) if split != "train" else ()
        required = [*self.template.fields(), *((label,) if split == "train" else ()),
                    *((lang_field,) if lang_field else ())]
        required = list(dict.fromkeys(required))
        rows = read_rows(path, flag, required, optional, lists=(label,) if self.label_lists else ())
        if not rows:
            raise DataError(f"{path}: no rows; expected a header and one example per line")
        out: dict[str, list[RecordExample]] = {}
        labelled = None
        for where, row in rows:
            lang = row[lang_field].strip() if lang_field else NO_LANGUAGE
            if not lang or lang in ("avg", "pooled"):
                raise DataError(f"{where}: language {row[lang_field]!r} in field {lang_field!r}; expected a "
                                "language name (not empty, avg or pooled)")
            value = row.get(label)
            if value is not None and not (value.strip() if isinstance(value, str) else value):
                value = None  # an empty cell
            if labelled is None:
                labelled = value is not None
            if split == "train" and value is None:
                raise DataError(f"{where}: empty {label!r}; every training row needs one ({self.label_flag})")
            if (value is not None) != labelled:
                raise DataError(f"{where}: {'an empty' if labelled else 'a'} {label!r} where the rows before "
                                f"{'have one' if labelled else 'have none'}; a {split} file is labelled in "
                                "every row or in none")
            if split != "train" and languages is not None and lang not in languages:
                continue
            key = lang if split != "train" else NO_LANGUAGE
            ex_rows = out.setdefault(key, [])
            text = {k: v for k, v in row.items() if k in self.template.fields()}
            ex_rows.append(RecordExample(f"{split}-{lang}-{len(ex_rows)}", lang, text,
                                         None if value is None else self.check_label(value, where), where))
        if split == "train":
            langs = list(dict.fromkeys(e.lang for e in out[NO_LANGUAGE]))
            self.train_language = langs[0] if len(langs) == 1 else NO_LANGUAGE
            return {self.train_language: out[NO_LANGUAGE]}
        for lang in languages or ():
            if lang not in out:
                raise DataError(f"{path}: no rows of language {lang!r} in field {lang_field!r} (listed by "
                                "--languages)")
        if languages is not None:
            out = {lang: out[lang] for lang in languages}
        self.seen += [lang for lang in out if lang not in self.seen]
        self.languages = tuple(self.seen)
        return out


class Cloze(OwnDataTask, ClozeClassificationTask):
    """``--task cloze``: single-token cloze classification of the rows of a user's files (module docstring)."""

    name = "cloze"
    options_cls: ClassVar[type] = ClozeOptions

    def __init__(self, tokenizer, seq_length: int, pattern_id: int | None = None, options: Any = None):
        o = options
        if o is None or not o.pattern:
            raise UsageError("--task cloze needs --pattern, e.g. '{premise}? [MASK], {hypothesis}'")
        if not o.label_field:
            raise UsageError("--task cloze needs --label-field NAME (the column or key holding the label)")
        fields = split_list(o.text_fields, "--text-fields")
        if o.label_field in fields or (o.language_field and o.language_field in fields):
            raise UsageError(f"--text-fields {o.text_fields}: the label / language field is not a text field")
        self.template = parse_pattern(o.pattern, fields, ("MASK",))
        words = parse_verbalizers(o.verbalizers)
        self.labels = tuple(words)
        # The pattern's space before [MASK] belongs to the word that fills it (module docstring).
        self.verbalizers = {k: self.template.mask_space + w for k, w in words.items()}
        super().__init__(tokenizer, seq_length, pattern_id, options)

    def label_field(self) -> str:
        return self.opts.label_field

    def check_label(self, value: Any, where: str) -> str:
        label = value.strip()
        if label not in self.labels:
            raise DataError(f"{where}: unknown label {label!r} in field {self.opts.label_field!r}; expected one "
                            f"of {list(self.labels)} (--verbalizers)")
        return label

    def pattern(self, example: RecordExample):  # type: ignore[override]
        return self.template.texts(example.fields), []

    def fit(self, parts_a, parts_b, budget: int, what: str) -> None:
        """Our own rule, not mGLM's: the longest field loses a token first (``tasks.base.fit_parts``), so no
        field is emptied while a longer one remains (mGLM's rule empties the last field of the pattern first)."""
        fit_parts(parts_a + parts_b, budget, what)


class Seq2Seq(OwnDataTask, GenerationTask):
    """``--task seq2seq``: generate ``--target-field`` into the blank of ``--pattern`` (default
    ``'{<source field>} [sMASK]'``), as the QA and summarization tasks do (``tasks.seq2seq``)."""

    name = "seq2seq"
    options_cls: ClassVar[type] = Seq2SeqFileOptions
    masks = ("sMASK", "gMASK")
    label_flag = "--target-field"
    label_lists = True

    def __init__(self, tokenizer, seq_length: int, pattern_id: int | None = None, options: Any = None):
        o = options
        if o is None or not o.target_field:
            raise UsageError("--task seq2seq needs --target-field NAME (the column or key holding the target)")
        fields = split_list(o.source_field, "--source-field")
        if o.target_field in fields:
            raise UsageError(f"--source-field {o.source_field}: the target field {o.target_field!r} cannot be "
                             "a source field")
        if o.pattern is None and len(fields) > 1:
            raise UsageError(f"--source-field {o.source_field}: several source fields need --pattern, e.g. "
                             f"'{{{fields[0]}}} [sMASK] {{{fields[1]}}}'")
        self.template = parse_pattern(o.pattern or f"{{{fields[0]}}} [sMASK]", fields, self.masks)
        self.metric = o.metric or "rouge"
        if self.metric not in METRICS:
            raise UsageError(f"--metric {self.metric!r}: expected one of {', '.join(METRICS)}")
        if self.metric == "squad":
            self.metric_name, self.metric_names = "f1", ("exact_match", "f1")
        else:
            from tasks.summarization import rouge_metric_names

            self.metric_name, self.metric_names = "rouge-l", rouge_metric_names()
        super().__init__(tokenizer, seq_length, pattern_id, options)
        self.mask_id = tokenizer.smask_id if self.template.mask == "[sMASK]" else tokenizer.gmask_id

    def label_field(self) -> str:
        return self.opts.target_field

    def check_label(self, value: Any, where: str) -> tuple[str, ...]:
        return value if isinstance(value, tuple) else (value,)

    def source_ids(self, example: RecordExample) -> list[int]:
        """``[CLS] parts`` with the blank, the longest field cut until it fits ``--seq-length``."""
        tok = self.tokenizer
        parts = [([self.mask_id] if t is MASK else tok.encode(t), short)
                 for t, short in self.template.texts(example.fields)]
        fit_parts(parts, self.seq_length - 1, f"{example.source}: task seq2seq with --seq-length {self.seq_length}")
        return [tok.cls_id, *(i for ids, _ in parts for i in ids)]

    def target_text(self, example: RecordExample) -> str | None:
        return None if example.label is None else example.label[0]

    def gold(self, example: RecordExample) -> list[str] | None:
        return None if example.label is None else list(example.label)

    def metrics(self, preds: Sequence[str], examples: Sequence[RecordExample]) -> dict[str, float]:
        golds = [e.label for e in examples]
        if self.metric == "squad":
            from tasks.metrics import squad_exact_match, squad_f1

            n = len(examples)
            return {"exact_match": 100.0 * sum(squad_exact_match(p, g) for p, g in zip(preds, golds, strict=True)) / n,
                    "f1": 100.0 * sum(squad_f1(p, g) for p, g in zip(preds, golds, strict=True)) / n}
        from tasks.summarization import has_cjk, summary_rouge

        refs = [g[0] for g in golds]
        primary = getattr(self.opts, "rouge_tokenization", None) or ("char" if any(map(has_cjk, refs)) else "word")
        return summary_rouge(preds, refs, primary, self.tokenizer.encode)

    def write_extra_predictions(self, folder: Path, split: str, lang: str, examples, preds) -> None:
        from tasks.summarization import write_text_predictions

        write_text_predictions(folder / f"{self.name}-{split}-{lang}", preds, [(e.label or ("",))[0] for e in examples])
