"""MLQA (Lewis et al., 2020): extractive QA in 7 languages, SQuAD v1.1 training (``tasks/qa.py``).

Data (``--data-dir``): the official ``MLQA_V1`` folder (``dev/dev-context-<c>-question-<q>.json``,
``test/test-context-<c>-question-<q>.json``), found as ``--data-dir`` itself, ``MLQA_V1/`` or
``mlqa/MLQA_V1/`` under it, or mGLM's sibling ``../mlqa/MLQA_V1``; training file ``train-v1.1.json`` (SQuAD
v1.1) in ``--data-dir``, ``squad/`` under it or the sibling ``../squad/``. XTREME's download strips the test
answers; use the original zip for a labelled test set.
Languages: by default the 7 matched pairs ``c = q`` (XTREME / the zero-shot protocol), keyed by the language;
``--languages de-en`` (``<context>-<question>``) adds a cross-lingual pair. Prompt (mGLM ``MLQAPVP``):
``[CLS] window . " Question: " question " Answer: " [sMASK]``. Metric: the official MLQA EM/F1 with the
normalisation of the context (answer) language.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from tasks.qa import QAExample, QATask, read_squad_file
from tasks.xquad import squad_train_file


class MLQA(QATask):
    name = "mlqa"
    languages = ("en", "es", "de", "ar", "hi", "vi", "zh")

    def question_ids(self, example: QAExample) -> list[int]:
        enc = self.tokenizer.encode
        question = enc(" Question: " + example.question.strip())[: self.seq_length // 4]
        return question + enc(" Answer: ")

    def prompt(self, question_ids: list[int], window: list[int]) -> list[int]:
        tok = self.tokenizer
        return [tok.cls_id, *window, *self.dot_ids(), *question_ids, tok.smask_id]

    @staticmethod
    def context_language(lang: str) -> str:
        return lang.split("-")[0]

    def answer_metric(self, pred: str, example: QAExample) -> tuple[float, float]:
        from tasks.metrics import mlqa_exact_match, mlqa_f1

        lang = self.context_language(example.lang)
        return mlqa_exact_match(pred, example.answers, lang), mlqa_f1(pred, example.answers, lang)

    def read_split(self, data_dir: Path, split: str, languages: Sequence[str] | None) -> dict[str, list[QAExample]]:
        from tasks.metrics import MLQA_LANGUAGES

        data_dir = self.check_dir(data_dir)
        if split == "train":
            return {"en": read_squad_file(squad_train_file(data_dir), "en", require_answers=True)}
        roots = [data_dir, data_dir / "MLQA_V1", data_dir / "mlqa" / "MLQA_V1", data_dir.parent / "mlqa" / "MLQA_V1"]
        root = next((r for r in roots if (r / "dev").is_dir() or (r / "test").is_dir()), None)
        if root is None:
            if split == "test":
                return {}
            raise FileNotFoundError(f"--data-dir {data_dir}: no MLQA_V1 folder (dev/, test/) in "
                                    + ", ".join(str(r) for r in roots))
        folder = root / split
        if split == "test" and not folder.is_dir():
            return {}
        pairs: dict[str, Path] = {}
        for p in sorted(folder.glob(f"{split}-context-*-question-*.json")):
            m = re.fullmatch(rf"{split}-context-([a-z]+)-question-([a-z]+)\.json", p.name)
            if m:
                c, q = m.groups()
                pairs[c if c == q else f"{c}-{q}"] = p
        for lang in languages or ():
            c = self.context_language(lang)
            if c not in MLQA_LANGUAGES:
                raise ValueError(f"--languages {lang}: MLQA context language {c!r} unknown; expected "
                                 f"{', '.join(MLQA_LANGUAGES)} (or <context>-<question>)")
        if languages is None:
            pairs = {k: v for k, v in pairs.items() if "-" not in k}
        return self.read_languages(pairs, languages, str(folder),
                                   f"{split}-context-<c>-question-<q>.json")
