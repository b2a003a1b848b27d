"""Evaluation metrics for the cross-lingual tasks (pure Python, standard library only).

Three families, each reproducing a published scorer exactly:

- ``accuracy``: XNLI / PAWS-X, ``100 * #(pred == label) / n``.
- SQuAD v1.1 (``evaluate-v1.1.py``; XQuAD and TyDiQA-GoldP in XTREME): normalise =
  lower -> delete ASCII ``string.punctuation`` -> ``\\b(a|an|the)\\b`` -> single spaces; EM is equality of
  the normalised strings; F1 is the harmonic mean of token precision and recall over the multiset
  intersection of whitespace tokens (0 when the intersection is empty); per question the max over gold
  answers; dataset score ``100 * sum / #questions`` where questions without a prediction score 0.
- MLQA (``mlqa_evaluation_v1.py``): same shape, but punctuation = every Unicode category ``P*`` character
  plus ``string.punctuation``, language-specific articles, and for ``zh`` "mixed segmentation" in which
  every CJK character in ``[\\u4e00-\\u9fa5]`` is a token of its own.

Plus a second, non-official mode reproducing the metric of the Multilingual-GLM code (``mglm_*``): SQuAD
normalisation with ``unidecode`` transliteration after lowercasing, the first non-``N/A`` window answer
per question, pooled over every language (see ``mglm_pooled_evaluate``).

Per-language results are combined by ``aggregate_by_language`` (unweighted mean, as XTREME does).
Nothing heavy is imported here: ``tools/evaluate.py`` imports this module and must start fast.
"""

from __future__ import annotations

import re
import string
import sys
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TextIO

__all__ = [
    "MLQA_LANGUAGES",
    "accuracy",
    "aggregate_by_language",
    "is_mlqa_punctuation",
    "json_type_name",
    "mglm_evaluate",
    "mglm_exact_match",
    "mglm_f1",
    "mglm_normalize_answer",
    "mglm_pooled_evaluate",
    "mglm_select_prediction",
    "mlqa_evaluate",
    "mlqa_exact_match",
    "mlqa_f1",
    "mlqa_normalize_answer",
    "mlqa_tokenize",
    "squad_evaluate",
    "squad_exact_match",
    "squad_f1",
    "squad_normalize_answer",
    "token_f1",
    "SquadQuestion",
    "read_squad_questions",
    "validate_predictions",
]

# ----------------------------------------------------------------------------------------------------------
# accuracy
# ----------------------------------------------------------------------------------------------------------


def accuracy(preds: Sequence[Any], labels: Sequence[Any]) -> float:
    """Percentage of positions where ``preds[i] == labels[i]``: ``100 * #equal / n`` (0-100 scale).

    Labels are compared as given (XTREME compares stripped strings; strip before calling if the values
    come from text files).
    """
    if len(preds) != len(labels):
        raise ValueError(f"accuracy: {len(preds)} predictions but {len(labels)} labels; expected equal lengths")
    if not preds:
        raise ValueError("accuracy: no predictions; expected at least one")
    correct = sum(1 for p, g in zip(preds, labels, strict=True) if p == g)
    return 100.0 * correct / len(preds)


# ----------------------------------------------------------------------------------------------------------
# shared token F1
# ----------------------------------------------------------------------------------------------------------


def token_f1(pred_tokens: Sequence[str], gold_tokens: Sequence[str]) -> float:
    """SQuAD v1.1 token F1: common = multiset intersection; 0 if empty, else 2PR/(P+R).

    P = |common| / |pred|, R = |common| / |gold|. Note the v1.1 quirk kept here: two empty token lists
    score F1 = 0 (while their EM is 1).
    """
    common = Counter(pred_tokens) & Counter(gold_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


# ----------------------------------------------------------------------------------------------------------
# SQuAD v1.1
# ----------------------------------------------------------------------------------------------------------

_ASCII_PUNCT = frozenset(string.punctuation)
_EN_ARTICLES = re.compile(r"\b(a|an|the)\b")


def squad_normalize_answer(s: str) -> str:
    """``evaluate-v1.1.py`` normalisation: lower, drop ASCII punctuation, drop a/an/the, single spaces.

    Only the 32 ASCII ``string.punctuation`` characters are removed; Unicode punctuation (« » 。 、 ¿)
    stays. ``\\b`` is Python 3's Unicode word boundary.
    """
    text = s.lower()
    text = "".join(ch for ch in text if ch not in _ASCII_PUNCT)
    text = _EN_ARTICLES.sub(" ", text)
    return " ".join(text.split())


def squad_exact_match(pred: str, gold: str | Sequence[str]) -> float:
    """1.0 if the normalised prediction equals the normalised gold (max over a list of golds), else 0.0."""
    golds = _as_gold_list(gold)
    p = squad_normalize_answer(pred)
    return max(float(p == squad_normalize_answer(g)) for g in golds)


def squad_f1(pred: str, gold: str | Sequence[str]) -> float:
    """SQuAD v1.1 token F1 in [0, 1] over whitespace tokens of the normalised strings; max over golds."""
    golds = _as_gold_list(gold)
    p = squad_normalize_answer(pred).split()
    return max(token_f1(p, squad_normalize_answer(g).split()) for g in golds)


def squad_evaluate(
    dataset_json: Mapping[str, Any] | Sequence[Any],
    predictions: Mapping[str, str],
    *,
    stderr: TextIO | None = None,
    source: str = "dataset",
) -> dict[str, float]:
    """Score ``{qid: answer}`` against a SQuAD-format dataset exactly as ``evaluate-v1.1.py``.

    ``dataset_json`` is the loaded file (``{"version", "data": [...]}``) or its ``data`` list. Returns
    ``{"exact_match", "f1"}`` on the 0-100 scale, both ``100 * sum / #questions``. Questions missing from
    ``predictions`` score 0 and are reported in one line on ``stderr`` (default ``sys.stderr``).
    """
    return _evaluate_qa(dataset_json, predictions, squad_exact_match, squad_f1, stderr=stderr, source=source)


# ----------------------------------------------------------------------------------------------------------
# MLQA
# ----------------------------------------------------------------------------------------------------------

#: Language codes ``mlqa_evaluation_v1.py`` accepts; any other code is an error there too.
MLQA_LANGUAGES: tuple[str, ...] = ("ar", "de", "en", "es", "hi", "vi", "zh")

# Article patterns of mlqa_evaluation_v1.py, applied after lowercasing and punctuation removal.
# Arabic: the official pattern is `\sال^|ال`; its first branch needs the start of the string right after
# two consumed characters and can never match, so the effect is "every ال anywhere, also inside words".
_MLQA_ARTICLES: dict[str, re.Pattern[str] | None] = {
    "en": re.compile(r"\b(a|an|the)\b"),
    "es": re.compile(r"\b(un|una|unos|unas|el|la|los|las)\b"),
    "de": re.compile(r"\b(ein|eine|einen|einem|eines|einer|der|die|das|den|dem|des)\b"),
    "vi": re.compile(r"\b(của|là|cái|chiếc|những)\b"),
    "ar": re.compile("ال"),
    "hi": None,
    "zh": None,
}
_MLQA_MIXED_SEGMENTATION = frozenset({"zh"})
_CJK = re.compile(r"[\u4e00-\u9fa5]")


@lru_cache(maxsize=65536)
def is_mlqa_punctuation(ch: str) -> bool:
    """Membership in the MLQA script's ``PUNCT`` set: Unicode category ``P*`` or ASCII ``string.punctuation``.

    Decided per character instead of building the official 1.1M-entry set (which costs ~0.5 s at
    start-up); the two agree for every code point below ``sys.maxunicode`` (U+10FFFF itself is unassigned,
    category Cn, so excluding it from the official range changes nothing).
    """
    return ch in _ASCII_PUNCT or unicodedata.category(ch).startswith("P")


def _check_mlqa_lang(lang: str) -> None:
    if lang not in _MLQA_ARTICLES:
        raise ValueError(
            f"unknown MLQA language code {lang!r}; expected one of {', '.join(MLQA_LANGUAGES)}"
        )


def mlqa_tokenize(text: str, lang: str) -> list[str]:
    """Tokens of MLQA's ``white_space_fix`` step: ``str.split()``, or mixed segmentation for ``zh``.

    Mixed segmentation: each character in ``[\\u4e00-\\u9fa5]`` or in PUNCT is its own token; the runs of
    other characters between them are whitespace-split. Empty/blank tokens are dropped.
    """
    _check_mlqa_lang(lang)
    if lang not in _MLQA_MIXED_SEGMENTATION:
        tokens = text.split()
    else:
        tokens = []
        run: list[str] = []
        for ch in text:
            if _CJK.match(ch) or is_mlqa_punctuation(ch):
                tokens.extend("".join(run).split())
                run = []
                tokens.append(ch)
            else:
                run.append(ch)
        tokens.extend("".join(run).split())
    return [t for t in tokens if t.strip()]


def mlqa_normalize_answer(s: str, lang: str) -> str:
    """``mlqa_evaluation_v1.py`` normalisation for answer language ``lang``.

    lower -> delete every PUNCT character -> replace the language's articles by a space -> tokens
    (``mlqa_tokenize``) joined by single spaces.
    """
    _check_mlqa_lang(lang)
    text = s.lower()
    text = "".join(ch for ch in text if not is_mlqa_punctuation(ch))
    articles = _MLQA_ARTICLES[lang]
    if articles is not None:
        text = articles.sub(" ", text)
    return " ".join(mlqa_tokenize(text, lang))


def mlqa_exact_match(pred: str, gold: str | Sequence[str], lang: str) -> float:
    """1.0 if MLQA-normalised prediction equals a MLQA-normalised gold answer, else 0.0."""
    golds = _as_gold_list(gold)
    p = mlqa_normalize_answer(pred, lang)
    return max(float(p == mlqa_normalize_answer(g, lang)) for g in golds)


def mlqa_f1(pred: str, gold: str | Sequence[str], lang: str) -> float:
    """MLQA token F1 in [0, 1] (``.split()`` of the normalised strings); max over golds."""
    golds = _as_gold_list(gold)
    p = mlqa_normalize_answer(pred, lang).split()
    return max(token_f1(p, mlqa_normalize_answer(g, lang).split()) for g in golds)


def mlqa_evaluate(
    dataset_json: Mapping[str, Any] | Sequence[Any],
    predictions: Mapping[str, str],
    lang: str,
    *,
    stderr: TextIO | None = None,
    source: str = "dataset",
) -> dict[str, float]:
    """Score ``{qid: answer}`` exactly as ``mlqa_evaluation_v1.py DATASET PRED lang`` (0-100 scale).

    ``lang`` is the answer (context) language; missing predictions score 0 and are reported on stderr.
    """
    _check_mlqa_lang(lang)
    return _evaluate_qa(
        dataset_json,
        predictions,
        lambda p, g: mlqa_exact_match(p, g, lang),
        lambda p, g: mlqa_f1(p, g, lang),
        stderr=stderr,
        source=source,
    )


# ----------------------------------------------------------------------------------------------------------
# aggregation
# ----------------------------------------------------------------------------------------------------------


def aggregate_by_language(scores: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Per-language scores plus ``"avg"``: the unweighted mean over languages of every metric (XTREME).

    ``{"en": {"exact_match": 80, "f1": 90}, "de": {...}}`` -> same dict plus
    ``"avg": {"exact_match": mean_l EM_l, "f1": mean_l F1_l}``. Every language must report the same keys.
    """
    if not scores:
        raise ValueError("aggregate_by_language: no languages given; expected at least one")
    if "avg" in scores:
        raise ValueError("aggregate_by_language: 'avg' is reserved for the mean and cannot be a language")
    langs = list(scores)
    keys = list(scores[langs[0]])
    for lang in langs[1:]:
        if set(scores[lang]) != set(keys):
            raise ValueError(
                f"aggregate_by_language: language {lang!r} has metrics {sorted(scores[lang])}, "
                f"expected {sorted(keys)} like {langs[0]!r}"
            )
    out: dict[str, dict[str, float]] = {lang: dict(scores[lang]) for lang in langs}
    out["avg"] = {k: sum(float(scores[lang][k]) for lang in langs) / len(langs) for k in keys}
    return out


# ----------------------------------------------------------------------------------------------------------
# mGLM's own metric (non-official; to compare with the Multilingual-GLM README)
# ----------------------------------------------------------------------------------------------------------


def _unidecode() -> Callable[[str], str]:
    try:
        from unidecode import unidecode
    except ImportError as exc:
        raise ImportError(
            "the mGLM pooled metric transliterates with the 'unidecode' package (pip install unidecode), "
            "or pass transliterate=<callable>"
        ) from exc
    return unidecode


def mglm_normalize_answer(s: str, transliterate: Callable[[str], str] | None = None) -> str:
    """Multilingual-GLM normalisation: lower -> transliterate -> SQuAD punctuation/articles/whitespace.

    ``transliterate`` defaults to ``unidecode.unidecode``. Because lowercasing happens *before*
    transliteration, capitals produced by it survive (``北京`` -> ``Bei Jing``); that is faithful.
    """
    translit = transliterate if transliterate is not None else _unidecode()
    text = translit(s.lower())
    text = "".join(ch for ch in text if ch not in _ASCII_PUNCT)
    text = _EN_ARTICLES.sub(" ", text)
    return " ".join(text.split())


def mglm_exact_match(
    pred: str, gold: str | Sequence[str], transliterate: Callable[[str], str] | None = None
) -> float:
    """EM under ``mglm_normalize_answer``; max over golds."""
    translit = transliterate if transliterate is not None else _unidecode()
    p = mglm_normalize_answer(pred, translit)
    return max(float(p == mglm_normalize_answer(g, translit)) for g in _as_gold_list(gold))


def mglm_f1(pred: str, gold: str | Sequence[str], transliterate: Callable[[str], str] | None = None) -> float:
    """SQuAD v1.1 token F1 under ``mglm_normalize_answer``; max over golds."""
    translit = transliterate if transliterate is not None else _unidecode()
    p = mglm_normalize_answer(pred, translit).split()
    return max(token_f1(p, mglm_normalize_answer(g, translit).split()) for g in _as_gold_list(gold))


def mglm_select_prediction(window_predictions: Iterable[str]) -> str:
    """The first window answer that is not ``n/a`` (ignoring case and spaces); ``"N/A"`` if none."""
    for pred in window_predictions:
        if pred.replace(" ", "").lower() != "n/a":
            return pred
    return "N/A"


def mglm_pooled_evaluate(
    records: Iterable[tuple[str, str, str, Sequence[str]]],
    *,
    merge_languages: bool = False,
    transliterate: Callable[[str], str] | None = None,
) -> dict[str, float]:
    """mGLM's QA score over window-level predictions of all languages at once.

    ``records``: ``(language, question_id, window_prediction, gold_answers)`` in example order (one per
    context window that was evaluated). Records are grouped by ``(language, question_id)`` (by
    ``question_id`` alone with ``merge_languages=True``); per group the prediction is
    ``mglm_select_prediction`` of its windows in order and the gold answers are those of its first record.
    Score = ``100 * mean over groups`` of ``mglm_exact_match`` / ``mglm_f1``: pooled, i.e. every question
    of every language weighs the same, and only questions that have records count. Returns
    ``{"exact_match", "f1", "questions"}``.
    """
    translit = transliterate if transliterate is not None else _unidecode()
    groups: dict[Any, tuple[list[str], Sequence[str]]] = {}
    for lang, qid, pred, golds in records:
        key = qid if merge_languages else (lang, qid)
        if key not in groups:
            groups[key] = ([], golds)
        groups[key][0].append(pred)
    if not groups:
        raise ValueError("mglm_pooled_evaluate: no records; expected at least one window prediction")
    em = f1 = 0.0
    for windows, golds in groups.values():
        pred = mglm_select_prediction(windows)
        em += mglm_exact_match(pred, golds, translit)
        f1 += mglm_f1(pred, golds, translit)
    n = len(groups)
    return {"exact_match": 100.0 * em / n, "f1": 100.0 * f1 / n, "questions": n}


def mglm_evaluate(
    datasets: Mapping[str, Mapping[str, Any] | Sequence[Any]],
    predictions: Mapping[str, Mapping[str, str | Sequence[str]]],
    *,
    transliterate: Callable[[str], str] | None = None,
) -> dict[str, float]:
    """mGLM pooled score from per-language files: ``datasets[lang]`` SQuAD JSON, ``predictions[lang]``
    ``{qid: answer or [window answers]}``.

    Questions without a prediction are left out of the denominator (mGLM drops windows without the gold
    answer at evaluation time, so such questions never reach its metric). See ``mglm_pooled_evaluate``.
    """
    unknown = sorted(set(predictions) - set(datasets))
    if unknown:
        raise ValueError(f"mglm_evaluate: predictions for languages {unknown} that have no dataset")

    def records() -> Iterable[tuple[str, str, str, Sequence[str]]]:
        for lang, dataset_json in datasets.items():
            preds = predictions.get(lang, {})
            for qid, golds in _iter_questions(dataset_json, f"datasets[{lang!r}]"):
                if qid not in preds:
                    continue
                value = preds[qid]
                windows = [value] if isinstance(value, str) else list(value)
                for window in windows:
                    yield lang, qid, window, golds

    return mglm_pooled_evaluate(records(), transliterate=transliterate)


# ----------------------------------------------------------------------------------------------------------
# dataset / prediction plumbing
# ----------------------------------------------------------------------------------------------------------


def _as_gold_list(gold: str | Sequence[str]) -> list[str]:
    golds = [gold] if isinstance(gold, str) else list(gold)
    if not golds:
        raise ValueError("no gold answers given; expected at least one (the official scripts fail too)")
    return golds


def json_type_name(x: Any) -> str:
    """The JSON name of a loaded value's type (object, array, string, number, boolean, null), for errors."""
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if x is None else names.get(type(x), type(x).__name__)


@dataclass(frozen=True)
class SquadQuestion:
    """One question of a SQuAD-format dataset. ``where``: its JSON path, ``data[i].paragraphs[j].qas[k]``."""

    qid: str
    question: Any  # a string unless read with ``scoring`` (the official scripts do not need it)
    context: Any  # likewise
    answers: tuple[str, ...]
    where: str


def read_squad_questions(dataset_json: Any, source: str = "dataset", *, scoring: bool = True) -> list[SquadQuestion]:
    """Every question of a SQuAD-v1.1-format dataset (the loaded file or its ``data`` list), in file order.

    Structure ``{"data": [{"paragraphs": [{"context": str, "qas": [{"id": str, "question": str,
    "answers": [{"text": str}, ...]}]}]}]}``; the first bad value is a ValueError
    ``<source>: not a SQuAD-format dataset: at <JSON path> expected <what>, got <JSON type>``.
    ``scoring`` (the official scripts' view, ``tools/evaluate.py``): ``answers`` must be a non-empty array of
    ``{"text": str}``; ``context`` and ``question`` are not needed and not checked. Otherwise (a task reading
    its data, ``tasks.qa``): ``context`` and ``question`` must be strings, ``answers`` may be absent or empty
    (XTREME strips test answers that way) and an answer may be a bare string.
    """

    def fail(path: str, expected: str, got: Any) -> None:
        raise ValueError(
            f"{source}: not a SQuAD-format dataset: at {path} expected {expected}, got {json_type_name(got)}"
        )

    if isinstance(dataset_json, Mapping):
        if "data" not in dataset_json:
            raise ValueError(
                f"{source}: not a SQuAD-format dataset: expected a top-level object with key \"data\", "
                f"found keys {sorted(dataset_json)[:10]}"
            )
        data = dataset_json["data"]
        path = "data"
    else:
        data, path = dataset_json, "<data>"
    if not isinstance(data, list):
        fail(path, "an array of articles", data)
    out: list[SquadQuestion] = []
    for i, article in enumerate(data):
        p = f"{path}[{i}]"
        if not isinstance(article, Mapping) or not isinstance(article.get("paragraphs"), list):
            fail(f"{p}.paragraphs", "an array of paragraphs",
                 article.get("paragraphs") if isinstance(article, Mapping) else article)
        for j, paragraph in enumerate(article["paragraphs"]):
            pp = f"{p}.paragraphs[{j}]"
            if not isinstance(paragraph, Mapping) or not isinstance(paragraph.get("qas"), list):
                fail(f"{pp}.qas", "an array of questions",
                     paragraph.get("qas") if isinstance(paragraph, Mapping) else paragraph)
            context = paragraph.get("context")
            if not scoring and not isinstance(context, str):
                fail(f"{pp}.context", "a string", context)
            for k, qa in enumerate(paragraph["qas"]):
                pq = f"{pp}.qas[{k}]"
                if not isinstance(qa, Mapping):
                    fail(pq, "a question object", qa)
                if not isinstance(qa.get("id"), str):
                    fail(f"{pq}.id", "a string", qa.get("id"))
                if not scoring and not isinstance(qa.get("question"), str):
                    fail(f"{pq}.question", "a string", qa.get("question"))
                answers = qa.get("answers") if scoring else qa.get("answers", [])
                if not isinstance(answers, list) or (scoring and not answers):
                    fail(f"{pq}.answers", ("a non-empty array" if scoring else "an array")
                         + " of {\"text\": ...} objects", answers)
                texts = []
                for m, answer in enumerate(answers):
                    if scoring and not isinstance(answer, Mapping):
                        fail(f"{pq}.answers[{m}].text", "a string", answer)  # the official scripts' message
                    text = answer.get("text") if isinstance(answer, Mapping) else answer
                    if not isinstance(text, str):
                        fail(f"{pq}.answers[{m}].text", "a string", text)
                    texts.append(text)
                out.append(SquadQuestion(qa["id"], qa.get("question"), context, tuple(texts), pq))
    return out


def validate_predictions(predictions: Any, source: str = "predictions") -> Mapping[str, str]:
    """Check that predictions are a JSON object ``{question_id: answer string}``; ValueError otherwise."""
    if not isinstance(predictions, Mapping):
        raise ValueError(
            f"{source}: expected a JSON object mapping question id -> answer string, "
            f"got {json_type_name(predictions)}"
        )
    for qid, answer in predictions.items():
        if not isinstance(answer, str):
            raise ValueError(
                f"{source}: prediction for id {qid!r} is {json_type_name(answer)}; expected a string"
            )
    return predictions


def _iter_questions(dataset_json: Any, source: str) -> Iterable[tuple[str, list[str]]]:
    for q in read_squad_questions(dataset_json, source):
        yield q.qid, list(q.answers)


def _evaluate_qa(
    dataset_json: Any,
    predictions: Mapping[str, str],
    em_fn: Callable[[str, list[str]], float],
    f1_fn: Callable[[str, list[str]], float],
    *,
    stderr: TextIO | None,
    source: str,
) -> dict[str, float]:
    """The evaluate() loop shared by the SQuAD and MLQA scripts (max over golds, missing = 0)."""
    validate_predictions(predictions)
    exact_match = f1 = 0.0
    total = 0
    missing: list[str] = []
    for qid, golds in _iter_questions(dataset_json, source):
        total += 1
        if qid not in predictions:
            missing.append(qid)
            continue
        pred = predictions[qid]
        exact_match += em_fn(pred, golds)
        f1 += f1_fn(pred, golds)
    if total == 0:
        raise ValueError(f"{source}: the dataset has no questions; expected at least one")
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        print(
            f"{len(missing)} of {total} questions have no prediction and receive score 0 ({shown})",
            file=stderr if stderr is not None else sys.stderr,
        )
    return {"exact_match": 100.0 * exact_match / total, "f1": 100.0 * f1 / total}
