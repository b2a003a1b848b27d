"""Documents -> training sequences: language sampling by temperature and GLM's ``BlockDataset``.

Language sampling (mGLM, temperature T = 0.3): with n_i the number of tokens of language i,

    p_i = n_i^T / sum_j n_j^T

so T = 1 samples proportionally to data size and T -> 0 uniformly over languages. Within a language a
document is drawn with probability proportional to its length (a uniform token position, mapped to its
document), as GLM's ``BlockDataset`` does.

Each sample is a pure function of ``(seed, index)``: the generator is ``np.random.default_rng([seed, index])``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np


def language_weights(token_counts: Mapping[str, int], temperature: float = 0.3) -> dict[str, float]:
    """p_i = n_i^T / sum_j n_j^T over languages with n_i > 0 (languages with no tokens get 0)."""
    if not token_counts:
        raise ValueError("no languages to sample from")
    if not 0 < temperature <= 1:
        raise ValueError(f"temperature must be in (0, 1], got {temperature}")
    for lang, n in token_counts.items():
        if n < 0:
            raise ValueError(f"language {lang}: token count {n} is negative")
    q = {lang: (float(n) ** temperature if n > 0 else 0.0) for lang, n in token_counts.items()}
    total = sum(q.values())
    if total == 0:
        raise ValueError(f"every language has zero tokens: {dict(token_counts)}")
    return {lang: v / total for lang, v in q.items()}


def format_language_table(token_counts: Mapping[str, int], weights: Mapping[str, float]) -> str:
    """A table to log at start: language, tokens, data share, sampling weight, up/down-sampling factor."""
    total = sum(token_counts.values()) or 1
    lines = [f"{'lang':<8}{'tokens':>14}{'share':>9}{'weight':>9}{'ratio':>8}"]
    for lang in sorted(token_counts, key=lambda x: -token_counts[x]):
        share = token_counts[lang] / total
        w = weights.get(lang, 0.0)
        ratio = w / share if share > 0 else float("inf")
        lines.append(f"{lang:<8}{token_counts[lang]:>14,}{share:>9.4f}{w:>9.4f}{ratio:>8.2f}")
    return "\n".join(lines)


@dataclass(frozen=True)
class BlockDatasetConfig:
    seq_length: int = 512
    temperature: float = 0.3
    non_sentence_start: float = 0.0  # prob of NOT snapping a random left cut to a sentence start
    sample_one_document: bool = False  # no packing of short documents
    seed: int = 1234
    num_samples: int = 10**12  # nominal length (samples are drawn, not enumerated)

    def __post_init__(self):
        if self.seq_length < 8:
            raise ValueError(f"seq_length must be >= 8, got {self.seq_length}")
        if not 0 <= self.non_sentence_start <= 1:
            raise ValueError(f"non_sentence_start must be in [0, 1], got {self.non_sentence_start}")


class BlockDataset:
    """Sequences of at most ``seq_length`` tokens from per-language token stores.

    Sample ``idx`` (with ``rng = default_rng([seed, idx])``):
      1. language ~ temperature weights; document ~ length within the language;
      2. ``doc + [eos]`` longer than ``seq_length - 1``: random left cut, moved (with prob
         ``1 - non_sentence_start``, either direction 50/50, at most ``seq_length // 2`` tokens) to just after a
         sentence end; prepend ``[CLS]``; right-strip to ``seq_length``, preferring to end at a sentence end
         unless that keeps less than half;
      3. otherwise ``[CLS] doc [eos]``, then (unless ``sample_one_document``) more documents of the same language,
         each as ``[CLS] doc [eos]`` right-stripped to the room left, until ``seq_length`` is reached.
    Returns ``{"text": int64 [n], "loss_mask": int64 [n]}``, n <= seq_length, loss 0 on ``[CLS]`` and 1 elsewhere.

    Args:
        stores: language -> object with ``num_tokens``, ``offsets`` (int64 [docs+1]) and ``tokens`` (like
            ``corpus.TokenStore``).
        sentence_end: ``tokens -> bool mask`` (e.g. ``sentence_end.SentenceEnds``).
    """

    def __init__(self, stores: Mapping, config: BlockDatasetConfig, cls_id: int, eos_id: int,
                 sentence_end: Callable[[np.ndarray], np.ndarray]):
        self.config = config
        self.cls_id, self.eos_id = cls_id, eos_id
        self.sentence_end = sentence_end
        counts = {lang: int(s.num_tokens) for lang, s in stores.items()}
        self.token_counts = counts
        self.weights = language_weights(counts, config.temperature)
        self.languages = [lang for lang in sorted(stores) if self.weights[lang] > 0]
        self.stores = [stores[lang] for lang in self.languages]
        self._cum = np.cumsum([self.weights[lang] for lang in self.languages])
        self._cum /= self._cum[-1]

    def __len__(self) -> int:
        return self.config.num_samples

    def language_table(self) -> str:
        return format_language_table(self.token_counts, self.weights)

    # ------------------------------------------------------------------------------- sampling
    def sample_language(self, rng: np.random.Generator) -> int:
        return int(min(np.searchsorted(self._cum, rng.random(), side="right"), len(self._cum) - 1))

    def sample_document(self, lang_index: int, rng: np.random.Generator) -> np.ndarray:
        """Length-weighted document of one language: ``doc + [eos]`` as int64."""
        store = self.stores[lang_index]
        offsets = store.offsets
        pos = int(rng.integers(store.num_tokens))
        d = int(np.searchsorted(offsets, pos, side="right")) - 1
        doc = np.asarray(store.tokens[int(offsets[d]) : int(offsets[d + 1])], dtype=np.int64)
        return np.concatenate([doc, [self.eos_id]])

    def _ends(self, tokens: np.ndarray) -> np.ndarray:
        return self.sentence_end(tokens) | (tokens == self.eos_id)

    def _right_strip(self, tokens: np.ndarray, limit: int) -> np.ndarray:
        """Cut to at most ``limit`` tokens, preferably right after a sentence end (unless < limit // 2 remain)."""
        if len(tokens) <= limit:
            return tokens
        ends = np.flatnonzero(self._ends(tokens[:limit]))
        keep = int(ends[-1]) + 1 if len(ends) else 0
        if keep < limit // 2 or keep == 0:
            keep = limit
        return tokens[:keep]

    def __getitem__(self, idx: int) -> dict[str, np.ndarray]:
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, int(idx)])
        lang = self.sample_language(rng)
        tokens = self.sample_document(lang, rng)
        seq = cfg.seq_length
        to_strip = len(tokens) - (seq - 1)
        if to_strip > 0:
            left = int(rng.integers(to_strip))
            if rng.random() >= cfg.non_sentence_start:
                left = self._snap_left(tokens, left, rng.random() < 0.5, seq // 2)
            body = self._right_strip(tokens[left:], seq - 1)
            text = np.concatenate([[self.cls_id], body])
            return {"text": text, "loss_mask": _loss_mask(len(text), [0])}
        parts = [np.array([self.cls_id], dtype=np.int64), tokens]
        length = 1 + len(tokens)
        while length < seq - 1 and not cfg.sample_one_document:  # room for [CLS] + at least one token
            room = seq - length
            new = np.concatenate([[self.cls_id], self.sample_document(lang, rng)])
            stripped = self._right_strip(new, room)
            parts.append(stripped)
            length += len(stripped)
            if len(stripped) < len(new):  # a cut document is always the last one
                break
        text = np.concatenate(parts)
        return {"text": text, "loss_mask": (text != self.cls_id).astype(np.int64)}

    def _snap_left(self, tokens: np.ndarray, left: int, backward: bool, max_move: int) -> int:
        """Move a cut at ``left`` to a sentence start (just after a sentence end), at most ``max_move`` steps."""
        n = len(tokens)
        if left == 0:
            return 0
        if backward:
            lo = max(left - max_move, 0)
            # candidate cut c in [lo, left] is a start if c == 0 or tokens[c - 1] ends a sentence
            if lo == 0:
                return 0 if not self._ends(tokens[:left]).any() else int(np.flatnonzero(self._ends(tokens[:left]))[-1]) + 1
            ends = np.flatnonzero(self._ends(tokens[lo - 1 : left]))
            return lo + int(ends[-1]) if len(ends) else lo
        hi = min(left + max_move, n - 2)  # keep at least one document token after the cut
        if hi <= left:
            return left
        ends = np.flatnonzero(self._ends(tokens[left - 1 : hi]))
        return left + int(ends[0]) if len(ends) else hi


def _loss_mask(n: int, head: list[int]) -> np.ndarray:
    m = np.ones(n, dtype=np.int64)
    m[: len(head)] = head
    return m
