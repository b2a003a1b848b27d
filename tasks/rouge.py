"""ROUGE-1, ROUGE-2 and ROUGE-L F-measures, averaged per example, with language-aware tokenization.

Written here (n-gram counting and LCS in plain Python), not built on the ``rouge-score`` package:
that package's tokenizer keeps only ``[a-z0-9]`` and so scores raw Chinese text as 0, and its
stemmer is English-only. The arithmetic is the same as ``rouge-score``'s (and ROUGE-1.5.5's
single-reference F):

    ROUGE-N:  overlap = sum over n-grams g of min(count_pred(g), count_ref(g))     (clipped counts)
              P = overlap / #n-grams(pred),   R = overlap / #n-grams(ref)
    ROUGE-L:  P = LCS(pred, ref) / |pred|,   R = LCS(pred, ref) / |ref|           (token sequences)
    F = 2 P R / (P + R), and 0 when P + R = 0 (in particular when either side has no n-grams).

``rouge_scores`` returns the mean over examples of each F, times 100.

Tokenization (``tokenize``): NFKC normalisation, lowercase, then

- ``"word"``: maximal runs of Unicode word characters (``\\w+``); punctuation and spaces separate
  tokens and are dropped. Right for languages written with spaces. No stemming.
- ``"char"``: every CJK character (Han ideographs, kana; see ``CJK_RANGES``) is one token, and the
  remaining runs of word characters are word tokens as in ``"word"``. Right for Chinese (and mixed
  Chinese / Latin text), the usual convention for Chinese ROUGE (LCSTS, NCLS-style numbers).

Pre-tokenized input (for example sentencepiece ids, the mGLM / original mT5 convention) goes through
``rouge_scores_from_tokens``. This module imports nothing beyond the standard library.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

# Scripts written without spaces between words: each character is a token in "char" mode.
CJK_RANGES = (
    "\u3040-\u309f"  # Hiragana
    "\u30a0-\u30ff"  # Katakana
    "\u3400-\u4dbf"  # CJK Unified Ideographs Extension A
    "\u4e00-\u9fff"  # CJK Unified Ideographs
    "\uf900-\ufaff"  # CJK Compatibility Ideographs
    "\U00020000-\U0002fa1f"  # CJK Extensions B-F, Compatibility Supplement
)
_CHAR_RE = re.compile(rf"[{CJK_RANGES}]|(?:(?![{CJK_RANGES}])\w)+")
_WORD_RE = re.compile(r"\w+")
TOKENIZATIONS = ("char", "word")


@dataclass(frozen=True)
class Score:
    """Precision, recall and F-measure of one prediction against one reference, each in [0, 1]."""

    precision: float
    recall: float
    fmeasure: float


def tokenize(text: str, tokenization: str = "char") -> list[str]:
    """Split ``text`` into ROUGE tokens (see the module docstring for the two modes)."""
    if tokenization not in TOKENIZATIONS:
        raise ValueError(f"unknown ROUGE tokenization {tokenization!r}; expected one of {', '.join(TOKENIZATIONS)}")
    text = unicodedata.normalize("NFKC", text).lower()
    pattern = _CHAR_RE if tokenization == "char" else _WORD_RE
    return pattern.findall(text)


def _score(overlap: int, n_pred: int, n_ref: int) -> Score:
    precision = overlap / n_pred if n_pred else 0.0
    recall = overlap / n_ref if n_ref else 0.0
    f = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return Score(precision, recall, f)


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def rouge_n(prediction: Sequence[str], reference: Sequence[str], n: int) -> Score:
    """ROUGE-N of two token sequences with clipped n-gram counts."""
    if n < 1:
        raise ValueError(f"ROUGE-N needs n >= 1, got {n}")
    pred, ref = _ngrams(prediction, n), _ngrams(reference, n)
    overlap = sum((pred & ref).values())  # Counter & = elementwise min
    return _score(overlap, sum(pred.values()), sum(ref.values()))


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (O(|a| |b|) time, O(|b|) memory)."""
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(prediction: Sequence[str], reference: Sequence[str]) -> Score:
    """ROUGE-L of two token sequences (LCS over the whole sequence, no sentence splitting)."""
    return _score(lcs_length(prediction, reference), len(prediction), len(reference))


def rouge_scores_from_tokens(
    predictions: Sequence[Sequence[str]], references: Sequence[Sequence[str]]
) -> dict[str, float]:
    """Mean per-example F of ROUGE-1/2/L over pre-tokenized pairs, in 0-100."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("ROUGE of an empty list of predictions is undefined")
    totals = {"rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0}
    for pred, ref in zip(predictions, references, strict=True):
        totals["rouge-1"] += rouge_n(pred, ref, 1).fmeasure
        totals["rouge-2"] += rouge_n(pred, ref, 2).fmeasure
        totals["rouge-l"] += rouge_l(pred, ref).fmeasure
    return {k: 100.0 * v / len(predictions) for k, v in totals.items()}


def rouge_scores(predictions: list[str], references: list[str], tokenization: str = "char") -> dict[str, float]:
    """Mean per-example F of ROUGE-1/2/L in 0-100: keys ``rouge-1``, ``rouge-2``, ``rouge-l``.

    ``tokenization`` is ``"char"`` (CJK characters are tokens; use for Chinese targets) or ``"word"``.
    """
    return rouge_scores_from_tokens(
        [tokenize(p, tokenization) for p in predictions], [tokenize(r, tokenization) for r in references]
    )
