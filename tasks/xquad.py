"""XQuAD (Artetxe et al., 2020): SQuAD v1.1 training, evaluation on 240 paragraphs / 1,190 questions in 12
languages, as generation into a blank (``tasks/qa.py``).

Data (``--data-dir``), either layout (files as distributed):
- one folder: ``train-v1.1.json`` (SQuAD v1.1) and ``xquad.<lang>.json``;
- XTREME's ``download/squad`` folder (``train-v1.1.json``) with the XQuAD files in ``xquad/`` under it or
  in the sibling ``../xquad/`` (mGLM's layout). Use deepmind/xquad's labelled files: XTREME's download
  strips the answers (such a language is read but not scored).
XQuAD has one split: its files are the ``dev`` sets (model selection and the reported scores, as mGLM;
``--select-on en-dev`` selects on XQuAD-en, which is the evaluation set). There is no ``test`` split.
Prompt (mGLM ``squad_v1``): ``[CLS] question [sMASK] . window``. Metric: official SQuAD v1.1 EM/F1.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tasks.qa import QAExample, QATask, first_file, read_squad_file


def squad_train_file(data_dir: Path) -> Path:
    """SQuAD v1.1 ``train-v1.1.json`` in ``data_dir``, ``data_dir/squad`` or the sibling ``../squad``."""
    cands = [data_dir / "train-v1.1.json", data_dir / "squad" / "train-v1.1.json",
             data_dir.parent / "squad" / "train-v1.1.json"]
    path = first_file(cands)
    if path is None:
        raise FileNotFoundError(f"--data-dir {data_dir}: no SQuAD v1.1 training file; looked for "
                                + ", ".join(str(p) for p in cands))
    return path


class XQuAD(QATask):
    name = "xquad"
    languages = ("en", "es", "de", "el", "ru", "tr", "ar", "vi", "th", "zh", "hi", "ro")

    def read_split(self, data_dir: Path, split: str, languages: Sequence[str] | None) -> dict[str, list[QAExample]]:
        data_dir = self.check_dir(data_dir)
        if split == "train":
            return {"en": read_squad_file(squad_train_file(data_dir), "en", require_answers=True)}
        if split == "test":
            return {}
        folders = [data_dir, data_dir / "xquad", data_dir.parent / "xquad"]
        folder = next((d for d in folders if d.is_dir() and list(d.glob("xquad.*.json"))), None)
        files = {p.name[len("xquad."):-len(".json")]: p for p in sorted(folder.glob("xquad.*.json"))} if folder else {}
        where = folder or data_dir
        return self.read_languages(files, languages, str(where), "xquad.<lang>.json in "
                                   + ", ".join(str(d) for d in folders))
