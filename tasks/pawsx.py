"""PAWS-X (Yang et al., 2019): paraphrase identification in 7 languages, English training data.

Data (``--data-dir``), either layout:
- raw ``x-final/<lang>/{train.tsv, dev_2k.tsv, test_2k.tsv}`` (header ``id sentence1 sentence2 label``;
  ``--data-dir`` may be ``x-final`` itself or its parent). Rows whose translation is the placeholder
  ``NS`` are kept, as in the official files (the PAWS-X README's counts exclude them);
- XTREME ``train-en.tsv``, ``dev-<lang>.tsv``, ``test-<lang>.tsv`` (sentence1, sentence2[, label]).
Patterns 0-3 of Multilingual-GLM (s2 first, then the blank, then s1), verbalizers No / Yes.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from pathlib import Path

from tasks.base import Example, check_label, read_tsv
from tasks.classification import MASK, ClozeClassificationTask, check_rows, read_xtreme_split

_RAW_FILES = {"train": "train.tsv", "dev": "dev_2k.tsv", "test": "test_2k.tsv"}


class PAWSX(ClozeClassificationTask):
    name = "pawsx"
    languages = ("de", "en", "es", "fr", "ja", "ko", "zh")
    labels = ("0", "1")
    verbalizers = {"0": " No", "1": " Yes"}
    default_pattern_id = 0

    def check_pattern_id(self, pattern_id: int) -> None:
        if pattern_id not in (0, 1, 2, 3):
            raise ValueError(f"--pattern-id {pattern_id}: PAWS-X defines patterns 0-3")

    def pattern(self, ex: Example):
        """Multilingual-GLM's ``PawsxPVP`` part groups, each part tokenized on its own (s1 = sentence1 as
        read, s2 = sentence2 without trailing punctuation); a space-keeping tokenizer sees every space below:

            0: a = '"' s2 '" ?'   b = [MASK] ',' ' "' s1 '"'       1: a = s2 '?'   b = [MASK] ',' ' ' + s1
            2: a = '"' s2 '" ?'   b = [MASK] '. "' s1 '"'          3: a = s2 '?'   b = [MASK] '.' ' ' + s1

        Too long an input is cut from the end of s2 while it is longer than s1, else of s1 (a tie cuts s1).
        """
        s1, s2 = ex.text_a, ex.text_b.rstrip(string.punctuation)
        quoted = [('"', False), (s2, True), ('" ?', False)]
        if self.pattern_id == 0:
            return quoted, [(MASK, False), (",", False), (' "', False), (s1, True), ('"', False)]
        if self.pattern_id == 2:
            return quoted, [(MASK, False), ('. "', False), (s1, True), ('"', False)]
        sep = "," if self.pattern_id == 1 else "."
        return [(s2, True), ("?", False)], [(MASK, False), (sep, False), (" " + s1, True)]

    def read_split(self, data_dir: Path, split: str, languages: Sequence[str] | None) -> dict[str, list[Example]]:
        data_dir = Path(data_dir)
        if not data_dir.is_dir():
            raise FileNotFoundError(f"--data-dir {data_dir}: no such directory")
        root = data_dir / "x-final" if (data_dir / "x-final").is_dir() else data_dir
        if (root / self.train_language / _RAW_FILES["train"]).is_file() or any(
                (root / lang).is_dir() for lang in self.languages):
            return self._read_raw(root, split, languages)
        return read_xtreme_split(self, data_dir, split, languages, self.labels)

    def _read_raw(self, root: Path, split: str, languages: Sequence[str] | None) -> dict[str, list[Example]]:
        name = _RAW_FILES[split]
        langs = [self.train_language] if split == "train" else languages
        if split == "test" and not any((root / lang / name).is_file() for lang in self.languages):
            return {}  # no test split at all (it is optional): no language of it is missing
        if langs is None:
            langs = [lang for lang in self.languages if (root / lang / name).is_file()]
            if not langs and split == "dev":
                raise FileNotFoundError(f"{root}: no <lang>/{name} for any of {', '.join(self.languages)}")
        out: dict[str, list[Example]] = {}
        for lang in langs:
            path = root / lang / name
            if not path.is_file():
                what = "the training file" if split == "train" else f"the {split} file of language {lang!r}"
                raise FileNotFoundError(f"{path}: {what} is missing")
            rows = []
            for lineno, (a, b, label) in read_tsv(path, ["sentence1", "sentence2", "label"], header=True,
                                                  expect="id, sentence1, sentence2, label"):
                where = f"{path}:{lineno}"
                rows.append(Example(f"{split}-{lang}-{len(rows)}", lang, a, b,
                                    check_label(label, self.labels, where), where))
            check_rows(rows, path, split, lang, languages is not None)
            out[lang] = rows
        return out
