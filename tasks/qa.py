"""Extractive QA as generation (XQuAD, MLQA, TyDiQA-GoldP), as mGLM's ``tasks/seq2seq/`` finetunes it.

A question's context rarely fits the source, so it is cut into token windows; each window becomes one
sample whose ``[sMASK]`` blank the model fills with the answer, or with ``N/A`` when the window does not
contain it. Given ``s = --seq-length`` and ``q`` = the prompt tokens that are not context (the question,
plus for MLQA ``" Question: "`` / ``" Answer: "``), the context tokens ``c_0 .. c_{n-1}`` give windows

    window_k = c[k * stride : k * stride + L],   L = s - 3 - |q|,   stride = min(--qa-stride or s // 2, L)

for ``k = 0, 1, ...`` until a window reaches the end of the context. Because ``stride <= L`` the windows
cover every context token, and an answer of at most ``L - stride`` tokens lies wholly inside one of them.

Training target of a window = the first gold answer ``a`` if ``decode(encode(a))`` is a substring of
``decode(window)``, else ``"N/A"`` (``--qa-na-train keep`` learns those, ``drop`` skips them; mGLM dropped
them for XQuAD/MLQA and kept them for TyDiQA). At evaluation every window is decoded and the gold answers
are never looked at; ``aggregate`` then picks per question among the windows whose output is not ``N/A``:
the highest generation score (``--qa-aggregate best``, default) or the first in context order (``first``,
mGLM's rule). A question whose windows all say ``N/A`` is answered ``""``: every question stays in the
denominator, as in the official scripts.

Differences from the mGLM code, all deliberate: window sources use the window's token ids directly (mGLM
re-encodes the decoded window text and truncates, which can drop its tail); no redundant last window that is
a subset of the previous one; stride capped at ``L`` (mGLM skips context when a long question makes
``L < s // 2``); questions longer than ``s // 4`` tokens are cut so that windows overlap by at least
``s // 4 - 3`` tokens; mGLM evaluates only the windows containing the gold answer (it peeks), we evaluate all.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from common.errors import DataError
from tasks.metrics import read_squad_questions
from tasks.seq2seq import GenerationOptions, GenerationTask
from training.logging import LOGGER_NAME

NA = "N/A"
QA_NA_TRAIN_CHOICES = ("keep", "drop")
QA_AGGREGATE_CHOICES = ("best", "first")


@dataclass(frozen=True)
class QAOptions(GenerationOptions):
    """Extractive QA as generation (xquad, mlqa, tydiqa): the generation options and the context windows."""

    qa_stride: int | None = None  # context window stride in tokens (default --seq-length // 2)
    qa_na_train: str = "keep"  # training windows without the answer (target "N/A"): keep | drop (mGLM: drop)
    qa_aggregate: str = "best"  # answer per question: best (highest score) | first (mGLM) non-N/A window

    TITLE: ClassVar[str] = "QA (the task's own options)"
    HELP: ClassVar[dict[str, str]] = {
        **GenerationOptions.HELP,
        "qa_stride": "stride of the context windows in tokens (default --seq-length // 2; capped at the window)",
        "qa_na_train": "training windows without the answer (target N/A): keep (default) or drop (mGLM for "
                       "xquad/mlqa)",
        "qa_aggregate": "answer of a question = the non-N/A window output with the best score (best, default) or "
                        "the first one (first, mGLM)",
    }

    def validate(self, finetune: Any) -> None:
        super().validate(finetune)
        if self.qa_stride is not None and self.qa_stride < 1:
            raise ValueError(f"--qa-stride {self.qa_stride}: expected >= 1")
        if self.qa_na_train not in QA_NA_TRAIN_CHOICES:
            raise ValueError(f"--qa-na-train {self.qa_na_train!r}: expected keep or drop")
        if self.qa_aggregate not in QA_AGGREGATE_CHOICES:
            raise ValueError(f"--qa-aggregate {self.qa_aggregate!r}: expected best or first")


@dataclass(frozen=True)
class QAExample:
    """One question with its context and gold answers (``()``: unlabelled, e.g. XTREME's stripped test)."""

    uid: str  # the dataset's question id (keys the official predictions JSON)
    lang: str  # language key of the evaluation set (MLQA: context language, or "<context>-<question>")
    question: str
    context: str
    answers: tuple[str, ...]
    source: str  # "file: data[i].paragraphs[j].qas[k]" for error messages


def is_na(text: str) -> bool:
    """A window output that means "no answer here": ``n/a`` ignoring case and spaces (mGLM), or nothing."""
    t = text.replace(" ", "").lower()
    return t in ("n/a", "")


def official_answer(pred: str) -> str:
    """The string written to the official ``{qid: answer}`` JSON and scored: ``N/A`` becomes ``""``."""
    return "" if is_na(pred) else pred


# ------------------------------------------------------------------------------------------- reading
def load_json(path: Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason})") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}:{e.colno}: not valid JSON ({e.msg}); expected a SQuAD-format "
                        'file {"version": ..., "data": [...]}') from None


def read_squad_file(path: Path, lang: str, require_answers: bool = False,
                    keep_id: Any = None) -> list[QAExample]:
    """Questions of a SQuAD-v1.1-format file, in file order.

    Structure ``{"data": [{"paragraphs": [{"context": str, "qas": [{"id": str, "question": str,
    "answers": [{"text": str, ...}]}]}]}]}``, read by ``tasks.metrics.read_squad_questions`` (the reader
    ``tools/evaluate.py`` uses too); anything else raises DataError naming the file and the JSON path of
    the first bad value. ``require_answers`` (training): a question without a non-empty answer is an
    error. Otherwise a question whose answers are absent or all empty (XTREME strips test answers that way)
    gets ``answers=()``. ``keep_id(qid) -> bool`` selects questions (TyDiQA's all-language train file).

    Ids: an evaluation file (``require_answers`` false) keys its predictions by question id, so a repeated
    id is an error naming every repeated id. A training file's ids are never used as keys and may repeat
    (XTREME's ``tydiqa.goldp.en.train.json`` keeps only the last part of each id: 89 ids for 3,696
    questions).
    """
    path = Path(path)
    out: list[QAExample] = []
    seen: dict[str, list[str]] = {}  # id -> where it occurs (evaluation files only)
    data = load_json(path)
    try:
        questions = read_squad_questions(data, str(path), scoring=False)
    except ValueError as e:  # tasks.metrics stays free of our error classes (the evaluate CLI maps them too)
        raise DataError(str(e)) from None
    for q in questions:
        if keep_id is not None and not keep_id(q.qid):
            continue
        texts = q.answers
        if not require_answers:
            seen.setdefault(q.qid, []).append(q.where)
        if not any(t.strip() for t in texts):
            if require_answers:
                raise DataError(f"{path}: question {q.qid!r} at {q.where} has no answer; every training "
                                "question needs one")
            texts = ()
        out.append(QAExample(q.qid, lang, q.question, q.context, texts, f"{path}: {q.where}"))
    repeated = {qid: ws for qid, ws in seen.items() if len(ws) > 1}
    if repeated:
        shown = "; ".join(f"{qid!r} at {', '.join(ws)}" for qid, ws in list(repeated.items())[:5])
        more = f" (and {len(repeated) - 5} more)" if len(repeated) > 5 else ""
        raise DataError(f"{path}: {len(repeated)} question id(s) repeat: {shown}{more}; an evaluation file keys "
                        "its predictions by question id, so ids must be unique")
    return out


def first_file(candidates: Sequence[Path]) -> Path | None:
    return next((p for p in candidates if p.is_file()), None)


# ------------------------------------------------------------------------------------------- task family
class QATask(GenerationTask):
    options_cls: ClassVar[type] = QAOptions
    """Shared machinery of the three QA tasks; subclasses give the prompt (``prompt``) and the readers.

    Predictions per example are answer strings (``N/A`` when no window answered). Metrics: ``exact_match``
    and ``f1`` (official, per language; ``answer_metric``), plus ``mglm_exact_match`` / ``mglm_f1`` (mGLM's
    transliterated normalisation; pooled over languages under ``pooled``) when ``unidecode`` is installed.
    """

    metric_name = "f1"
    metric_names: tuple[str, ...] = ("exact_match", "f1")

    def __init__(self, tokenizer, seq_length: int, pattern_id: int | None = None, options: Any = None):
        super().__init__(tokenizer, seq_length, pattern_id, options)
        o = options if options is not None else QAOptions()  # checked once, by QAOptions.validate
        self.stride = o.qa_stride or seq_length // 2
        self.na_train = o.qa_na_train
        self.aggregation = o.qa_aggregate
        try:
            from unidecode import unidecode
        except ImportError:  # the mGLM comparison metric is optional (pip install unidecode)
            unidecode = None
        self.transliterate = unidecode
        if unidecode is not None:
            self.metric_names = (*type(self).metric_names, "mglm_exact_match", "mglm_f1")

    # prompt -------------------------------------------------------------------------------------
    def prompt(self, question_ids: list[int], window: list[int]) -> list[int]:
        """The source of one window, exactly ``3 + |question_ids| + |window|`` tokens. mGLM's XQuAD and
        TyDiQA order: ``[CLS] question [sMASK] . window`` (a task with another order overrides it)."""
        tok = self.tokenizer
        return [tok.cls_id, *question_ids, tok.smask_id, *self.dot_ids(), *window]

    def question_ids(self, example: QAExample) -> list[int]:
        """Every non-context, non-special prompt token; the question is cut to ``s // 4`` tokens so windows overlap."""
        ids = self.tokenizer.encode(" " + example.question.strip())
        return ids[: self.seq_length // 4]

    def context_ids(self, example: QAExample) -> list[int]:
        return self.tokenizer.encode(" " + example.context.strip())

    # windows ------------------------------------------------------------------------------------
    def dot_ids(self) -> list[int]:
        """The ``"."`` of the prompts: one piece when the vocabulary has it (as mGLM's prompts assume)."""
        sp = self.tokenizer.sp
        i = sp.PieceToId(".")
        return [i] if i != sp.unk_id() else self.tokenizer.encode(".")

    def window_spans(self, n_context: int, n_prompt: int) -> list[tuple[int, int]]:
        """``(start, end)`` token spans of the windows of a context of ``n_context`` tokens when the rest of
        the source takes ``n_prompt`` tokens (``3 + |q|``): ``L = s - n_prompt`` (module doc)."""
        L = self.seq_length - n_prompt
        if L < 1:
            raise ValueError(f"--seq-length {self.seq_length}: no room for context after {n_prompt} prompt tokens")
        stride = min(self.stride, L)
        spans = []
        start = 0
        while True:
            end = min(start + L, n_context)
            spans.append((start, end))
            if end >= n_context:
                return spans
            start += stride

    def windows(self, example: QAExample) -> list[tuple[list[int], list[int]]]:
        """``(source ids, window ids)`` of every window of ``example``."""
        q = self.question_ids(example)
        ctx = self.context_ids(example)
        spans = self.window_spans(len(ctx), len(self.prompt(q, [])))
        return [(self.prompt(q, ctx[a:b]), ctx[a:b]) for a, b in spans]

    def window_target(self, example: QAExample, window: list[int]) -> str:
        """The first gold answer if its ``decode(encode())`` is not empty and occurs in the decoded window, else
        ``N/A`` (mGLM's processors)."""
        if not example.answers:
            raise ValueError(f"{example.source}: question {example.uid!r} has no answer; training needs one")
        answer = example.answers[0].strip()
        found = self.tokenizer.decode(self.tokenizer.encode(answer)).strip()
        # An empty first answer (its text lost to tokenization too) is in every window: mGLM trains N/A then.
        return answer if found and found in self.tokenizer.decode(window) else NA

    def source_ids(self, example: QAExample) -> list[int]:
        return self.windows(example)[0][0]

    def target_text(self, example: QAExample) -> str | None:
        return self.window_target(example, self.windows(example)[0][1])

    def train_samples(self, examples: Sequence[QAExample]) -> list[dict[str, Any]]:
        """One sample per window (``N/A`` windows skipped with ``--qa-na-train drop``). A question whose
        answer is in none of its windows (its text is not in the context, or does not survive tokenization)
        has only ``N/A`` targets: such questions are counted and reported with their first ids, not silently
        trained as "no answer here"."""
        out = []
        unanswered: list[QAExample] = []
        for i, e in enumerate(examples):
            answered = False
            for w, (source, window) in enumerate(self.windows(e)):
                target = self.window_target(e, window)
                answered = answered or target != NA
                if target == NA and self.na_train == "drop":
                    continue
                out.append({**self.make_sample(source, target, i), "window": w})
            if not answered:
                unanswered.append(e)
        if unanswered:
            not_in_text = sum(1 for e in unanswered if e.answers[0].strip() not in e.context)
            first = ", ".join(f"{e.uid!r} ({e.source.rsplit(': ', 1)[-1]})" for e in unanswered[:5])
            fate = "dropped (--qa-na-train drop)" if self.na_train == "drop" else "trained on N/A targets only"
            logging.getLogger(LOGGER_NAME).warning(
                f"{self.name}: {len(unanswered)} of {len(examples)} training questions have their answer in no "
                f"window of their context ({not_in_text} of them: the answer text is not in the context at all); "
                f"they are {fate}; first: {first} in {unanswered[0].source.rsplit(': ', 1)[0]}")
        return out

    def eval_samples(self, examples: Sequence[QAExample]) -> list[dict[str, Any]]:
        return [{**self.make_sample(source, None, i), "window": w}
                for i, e in enumerate(examples) for w, (source, _) in enumerate(self.windows(e))]

    # aggregation --------------------------------------------------------------------------------
    def aggregate(self, examples: Sequence[QAExample], samples: Sequence[dict[str, Any]],
                  sample_preds: Sequence[Any]) -> list[str]:
        """One answer per question from its windows' ``(text, score)``: among the non-``N/A`` outputs the
        highest score (``best``; the earlier window on ties) or the first window (``first``); ``N/A`` if none."""
        if len(samples) != len(sample_preds):
            raise ValueError(f"aggregate: {len(sample_preds)} predictions for {len(samples)} windows")
        per: list[list[tuple[int, str, float]]] = [[] for _ in examples]
        for s, pred in zip(samples, sample_preds, strict=True):
            text, score = (pred, 0.0) if isinstance(pred, str) else pred
            per[s["example"]].append((s.get("window", 0), text.strip(), float(score)))
        out = []
        for windows in per:
            answers = sorted((w for w in windows if not is_na(w[1])), key=lambda w: w[0])
            if not answers:
                out.append(NA)
            elif self.aggregation == "first":
                out.append(answers[0][1])
            else:
                out.append(max(answers, key=lambda w: (w[2], -w[0]))[1])
        return out

    # metrics ------------------------------------------------------------------------------------
    def gold(self, example: QAExample) -> list[str] | None:
        return list(example.answers) or None

    def answer_metric(self, pred: str, example: QAExample) -> tuple[float, float]:
        """Official (EM, F1) in [0, 1] of one answer; SQuAD v1.1 unless a task overrides it."""
        from tasks.metrics import squad_exact_match, squad_f1

        return squad_exact_match(pred, example.answers), squad_f1(pred, example.answers)

    def metrics(self, preds: Sequence[str], examples: Sequence[QAExample]) -> dict[str, float]:
        """100 x mean over every question of the official EM / F1 of ``official_answer(pred)`` (the string
        the predictions JSON holds, so ``tools/evaluate.py`` gives the same numbers); mGLM's metric scores
        the raw output (``N/A`` included), as mGLM does."""
        if len(preds) != len(examples):
            raise ValueError(f"metrics: {len(preds)} predictions for {len(examples)} questions")
        if not examples:
            raise ValueError("metrics: no questions")
        em = f1 = 0.0
        for p, e in zip(preds, examples, strict=True):
            a, b = self.answer_metric(official_answer(p), e)
            em += a
            f1 += b
        n = len(examples)
        out = {"exact_match": 100.0 * em / n, "f1": 100.0 * f1 / n}
        if self.transliterate is not None:
            from tasks.metrics import mglm_exact_match, mglm_f1

            out["mglm_exact_match"] = 100.0 * sum(mglm_exact_match(p, e.answers, self.transliterate)
                                                  for p, e in zip(preds, examples, strict=True)) / n
            out["mglm_f1"] = 100.0 * sum(mglm_f1(p, e.answers, self.transliterate)
                                         for p, e in zip(preds, examples, strict=True)) / n
        return out

    def prediction_records(self, examples: Sequence[QAExample], preds: Sequence[str]) -> list[dict[str, Any]]:
        return [{"idx": e.uid, "prediction": p, "gold": list(e.answers)} for e, p in zip(examples, preds, strict=True)]

    def write_extra_predictions(self, folder: Path, split: str, lang: str, examples: Sequence[QAExample],
                                preds: Sequence[str]) -> None:
        """``<task>-<split>-<lang>.json``: the official ``{qid: answer}`` file (``N/A`` -> ``""``)."""
        obj = {e.uid: official_answer(p) for e, p in zip(examples, preds, strict=True)}
        path = Path(folder) / f"{self.name}-{split}-{lang}.json"
        path.write_text(json.dumps(obj, ensure_ascii=False, indent=1), encoding="utf-8")

    # reading helpers ----------------------------------------------------------------------------
    @staticmethod
    def check_dir(data_dir: Path) -> Path:
        data_dir = Path(data_dir)
        if not data_dir.is_dir():
            raise FileNotFoundError(f"--data-dir {data_dir}: no such directory")
        return data_dir

    def read_languages(self, files: dict[str, Path], languages: Sequence[str] | None, where: str,
                       expect: str) -> dict[str, list[QAExample]]:
        """Read ``{lang: file}``; with an explicit ``languages`` list a missing file is an error."""
        if languages is not None:
            missing = [lang for lang in languages if lang not in files]
            if missing:
                raise FileNotFoundError(f"{where}: no file for language(s) {missing} (--languages); expected "
                                        f"{expect}")
            files = {lang: files[lang] for lang in languages}
        order = {lang: i for i, lang in enumerate(self.languages)}
        keys = sorted(files, key=lambda k: (order.get(k, len(order)), k)) if languages is None else list(files)
        out = {k: read_squad_file(files[k], k) for k in keys}
        for k, examples in out.items():
            if languages is not None and not examples:
                raise DataError(f"{files[k]}: no questions in the file of language {k!r} (listed by --languages)")
        return out
