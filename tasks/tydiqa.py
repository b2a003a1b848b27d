"""TyDiQA-GoldP (Clark et al., 2020): the gold-passage task in 9 languages; zero-shot, English training
(``tasks/qa.py``).

Data (``--data-dir``), the official files or XTREME's:
- train: ``tydiqa-goldp-v1.1-train/tydiqa.goldp.en.train.json`` (XTREME's English split), or the official
  all-language ``tydiqa-goldp-v1.1-train.json`` from which the ``english-*`` questions are taken;
- dev: ``tydiqa-goldp-v1.1-dev/tydiqa-goldp-dev-<language>.json`` (the official tgz; ``<language>`` spelt
  out, e.g. ``arabic``) or XTREME's ``tydiqa.goldp.<iso>.dev.json`` (XTREME strips their answers: read but not
  scored).
The GoldP dev files are the evaluation set (XTREME and mGLM use them as the test set); they are the
``dev`` split here and there is no ``test`` split. Prompt: ``[CLS] question [sMASK] . window``; metric:
official SQuAD v1.1 EM/F1 (XTREME averages all 9 languages including English).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from tasks.qa import QAExample, QATask, read_squad_file

NAMES = {"arabic": "ar", "bengali": "bn", "english": "en", "finnish": "fi", "indonesian": "id", "korean": "ko",
         "russian": "ru", "swahili": "sw", "telugu": "te"}


class TyDiQA(QATask):
    name = "tydiqa"
    languages = ("en", "ar", "bn", "fi", "id", "ko", "ru", "sw", "te")

    def read_split(self, data_dir: Path, split: str, languages: Sequence[str] | None) -> dict[str, list[QAExample]]:
        data_dir = self.check_dir(data_dir)
        if split == "train":
            xtreme = data_dir / "tydiqa-goldp-v1.1-train" / "tydiqa.goldp.en.train.json"
            raw = data_dir / "tydiqa-goldp-v1.1-train.json"
            if xtreme.is_file():
                return {"en": read_squad_file(xtreme, "en", require_answers=True)}
            if raw.is_file():
                return {"en": read_squad_file(raw, "en", require_answers=True,
                                              keep_id=lambda qid: qid.startswith("english-"))}
            raise FileNotFoundError(f"--data-dir {data_dir}: no TyDiQA-GoldP training file; looked for {xtreme} "
                                    f"and {raw}")
        if split == "test":
            return {}
        folder = data_dir / "tydiqa-goldp-v1.1-dev"
        files: dict[str, Path] = {}
        if folder.is_dir():
            for p in sorted(folder.glob("*.json")):
                m = re.fullmatch(r"tydiqa-goldp-dev-([a-z]+)\.json", p.name)
                if m and m.group(1) in NAMES:
                    files[NAMES[m.group(1)]] = p
                m = re.fullmatch(r"tydiqa\.goldp\.([a-z]{2})\.dev\.json", p.name)
                if m:
                    files.setdefault(m.group(1), p)
        return self.read_languages(files, languages, str(folder),
                                   "tydiqa-goldp-dev-<language>.json or tydiqa.goldp.<iso>.dev.json")
