"""XNLI (Conneau et al., 2018): 15 languages, trained on English MultiNLI, evaluated zero-shot.

Data (``--data-dir``), either layout:
- XTREME: ``train-en.tsv``, ``dev-<lang>.tsv``, ``test-<lang>.tsv`` (premise, hypothesis[, label]);
- raw: ``XNLI-1.0/xnli.{dev,test}.tsv`` (header; columns language, gold_label, sentence1, sentence2) and
  ``XNLI-MT-1.0/multinli/multinli.train.en.tsv`` (header premise, hypo, label; ``contradictory``).
Pattern 4 of Multilingual-GLM (the only one it defines for XNLI), verbalizers True / False / Maybe.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from pathlib import Path

from tasks.base import Example, check_label, read_tsv
from tasks.classification import MASK, ClozeClassificationTask, read_xtreme_split


class XNLI(ClozeClassificationTask):
    name = "xnli"
    languages = ("ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh")
    labels = ("neutral", "entailment", "contradiction")  # mGLM's order (the class index)
    verbalizers = {"contradiction": " False", "entailment": " True", "neutral": " Maybe"}
    default_pattern_id = 4

    def check_pattern_id(self, pattern_id: int) -> None:
        if pattern_id != 4:
            raise ValueError(f"--pattern-id {pattern_id}: XNLI defines pattern 4 only (as Multilingual-GLM)")

    def pattern(self, ex: Example):
        """Multilingual-GLM's ``XnliPVP`` pattern 4: the premise stripped of surrounding whitespace, the
        hypothesis stripped of trailing punctuation and then of whitespace, in this order (so ``"x. "`` keeps
        its period), each part tokenized on its own. One group (parts_b empty), so an input that is too long
        loses its hypothesis, down to nothing, before the premise (``tasks.base.fit_pet_parts``)."""
        premise = ex.text_a.strip()
        hyp = ex.text_b.rstrip(string.punctuation).strip()
        return [('Based on the fact written in foreign language: "', False), (premise, True), ('".', False),
                (' Is the followling statement reasonably True or definitely False: "', False), (hyp, True),
                ('"?', False), (" Answer:", False), (MASK, False)], []

    def normalize_label(self, label: str, where: str) -> str:
        label = label.strip()
        return "contradiction" if label == "contradictory" else label  # MultiNLI spelling in XNLI-MT

    def read_split(self, data_dir: Path, split: str, languages: Sequence[str] | None) -> dict[str, list[Example]]:
        data_dir = Path(data_dir)
        if not data_dir.is_dir():
            raise FileNotFoundError(f"--data-dir {data_dir}: no such directory")
        raw = data_dir / "XNLI-1.0"
        if not (data_dir / "train-en.tsv").is_file() and not list(data_dir.glob("dev-*.tsv")) and raw.is_dir():
            return self._read_raw(data_dir, split, languages)
        return read_xtreme_split(self, data_dir, split, languages, self.labels)

    def _read_raw(self, data_dir: Path, split: str, languages: Sequence[str] | None) -> dict[str, list[Example]]:
        if split == "train":
            path = data_dir / "XNLI-MT-1.0" / "multinli" / "multinli.train.en.tsv"
            rows = []
            for lineno, (a, b, label) in read_tsv(path, ["premise", "hypo", "label"], header=True,
                                                  expect="premise, hypo, label"):
                where = f"{path}:{lineno}"
                label = check_label(self.normalize_label(label, where), self.labels, where)
                rows.append(Example(f"train-en-{len(rows)}", "en", a, b, label, where))
            return {"en": rows}
        path = data_dir / "XNLI-1.0" / f"xnli.{split}.tsv"
        if split == "test" and not path.is_file():
            return {}
        out: dict[str, list[Example]] = {}
        for lineno, (lang, label, a, b) in read_tsv(path, ["language", "gold_label", "sentence1", "sentence2"],
                                                    header=True, expect="the XNLI-1.0 columns"):
            where = f"{path}:{lineno}"
            if languages is not None and lang not in languages:
                continue
            label = check_label(label, self.labels, where)
            rows = out.setdefault(lang, [])
            rows.append(Example(f"{split}-{lang}-{len(rows)}", lang, a, b, label, where))
        for lang in languages or ():
            if lang not in out:
                raise FileNotFoundError(f"{path}: no rows of language {lang!r} (listed by --languages)")
        order = {lang: i for i, lang in enumerate(self.languages)}
        return dict(sorted(out.items(), key=lambda kv: order.get(kv[0], len(order))))
