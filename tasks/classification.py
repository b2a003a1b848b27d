"""Cloze classification with pattern-verbalizer pairs (XNLI, PAWS-X), as Multilingual-GLM does it.

A pattern turns an example into text parts with one ``[MASK]``. The model input is

    [CLS] part_1 ... [MASK] ... part_k <eos> <sop>        sep = index of <sop> = len([CLS] ... <eos>)

with 2D positions ``(i, 0)`` for the context tokens and ``(mask_pos, 1)`` for ``<sop>`` (it stands for the
first token of the blank at ``[MASK]``). The LM logits at ``<sop>`` read at the verbalizer token ids give
one score per label, ``s[b, c] = logits[b, sep_b, v_c]``, and the loss is ``CE(s, label)`` over the C
labels. Every verbalizer must be exactly one token (checked when the task is built).

Under tensor parallelism the logits are vocab-parallel: rank r holds ids ``[r V/p, (r+1) V/p)``. Each rank
reads the verbalizer ids it owns (zero elsewhere) and one all-reduce(SUM) over the TP group assembles
``s`` (backward: identity, each rank's gradient flows to the ids it owns).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from common.errors import DataError
from tasks.base import Example, Task, check_label, fit_pet_parts, read_tsv

if TYPE_CHECKING:
    from mpu.initialize import ParallelState

MASK = object()  # the blank's place in a pattern


def cloze_scores(logits: torch.Tensor, index: torch.Tensor, label_ids: torch.Tensor, parallel_state: ParallelState) -> torch.Tensor:
    """Scores [B, C] = ``logits[b, index[b], label_ids[c]]`` from vocab-parallel logits [B, L, V/p] (fp32),
    or from [B, V/p] already taken at ``index`` (``GLMModel(..., logit_mask=at_index(...))``)."""
    from mpu.mappings import reduce_from_tensor_parallel_region

    b = torch.arange(logits.size(0), device=logits.device)
    at = (logits if logits.dim() == 2 else logits[b, index]).float()  # [B, V/p]
    if parallel_state.tp_size == 1:
        return at[:, label_ids]  # [B, C]
    part = at.size(-1)
    start = parallel_state.tp_rank * part
    local = label_ids - start  # [C]
    owned = (local >= 0) & (local < part)
    picked = at[:, local.clamp(0, part - 1)] * owned.to(at.dtype)  # [B, C], zero where another rank owns the id
    return reduce_from_tensor_parallel_region(picked, parallel_state)


def read_xtreme_split(task: Task, folder: Path, split: str, languages: Sequence[str] | None,
                      labels: Sequence[str]) -> dict[str, list[Example]]:
    """XTREME layout: ``train-en.tsv``, ``dev-<lang>.tsv``, ``test-<lang>.tsv``; no header; columns
    ``text_a text_b [label]`` (XTREME's test files carry no label column)."""
    langs = [task.train_language] if split == "train" else languages
    explicit = languages is not None
    if split == "test" and not any((folder / f"test-{lang}.tsv").is_file() for lang in task.languages):
        return {}  # no test split at all (it is optional): no language of it is missing
    if langs is None:
        langs = [lang for lang in task.languages if (folder / f"{split}-{lang}.tsv").is_file()]
        if not langs:
            raise FileNotFoundError(f"{folder}: no {split}-<lang>.tsv file for any of {', '.join(task.languages)}")
    out: dict[str, list[Example]] = {}
    for lang in langs:
        path = folder / f"{split}-{lang}.tsv"
        if not path.is_file():
            what = "the training file" if split == "train" else f"the {split} file of language {lang!r}"
            hint = " (listed by --languages)" if explicit and split != "train" else ""
            raise FileNotFoundError(f"{path}: {what} is missing{hint}")
        rows = []
        for lineno, f in read_tsv(path, [0, 1, 2], header=False, min_fields=2,
                                  expect="2 or 3 tab-separated columns (text_a, text_b[, label])"):
            where = f"{path}:{lineno}"
            if f[2] == "" and split == "test":
                label = None  # XTREME's test files: two columns, no labels
            else:
                label = check_label(task.normalize_label(f[2], where), labels, where)
            rows.append(Example(f"{split}-{lang}-{len(rows)}", lang, f[0], f[1], label, where))
        check_rows(rows, path, split, lang, explicit)
        out[lang] = rows
    return out


def check_rows(rows: list, path: Path, split: str, lang: str, explicit: bool) -> None:
    """An empty training file, or an empty dev/test file of a language listed by ``--languages``, is an
    error naming the file; any other empty file is returned empty and reported as absent by the run."""
    if rows:
        return
    if split == "train":
        raise DataError(f"{path}: the training file is empty; expected one example per line")
    if explicit:
        raise DataError(f"{path}: the {split} file of language {lang!r} is empty (listed by --languages)")


class ClozeClassificationTask(Task):
    """Single-token cloze classification. Subclasses define ``labels``, ``verbalizers`` and ``pattern``."""

    labels: tuple[str, ...] = ()
    verbalizers: dict[str, str] = {}

    def __init__(self, tokenizer, seq_length: int, pattern_id: int | None = None, options: Any = None):
        super().__init__(tokenizer, seq_length, pattern_id, options)
        self.check_pattern_id(self.pattern_id)
        ids = []
        for label in self.labels:
            word = self.verbalizers[label]
            toks = tokenizer.encode(word)
            if len(toks) != 1:
                pieces = tokenizer.convert_ids_to_tokens(toks)
                raise ValueError(f"task {self.name}: verbalizer {word!r} of label {label!r} is {len(toks)} tokens "
                                 f"{pieces} with {tokenizer.model_path}; cloze classification needs exactly one")
            ids.append(toks[0])
        if len(set(ids)) != len(ids):
            raise ValueError(f"task {self.name}: verbalizers {self.verbalizers} map two labels to one token")
        self.label_ids = torch.tensor(ids, dtype=torch.long)

    # pattern ----------------------------------------------------------------------------------
    def check_pattern_id(self, pattern_id: int) -> None:
        pass

    def pattern(self, example: Example) -> tuple[list[tuple[Any, bool]], list[tuple[Any, bool]]]:
        """mGLM's two part groups ``(parts_a, parts_b)`` (``PVP.get_parts``), each a list of parts
        ``(text or MASK, shortenable)``; the input is parts_a then parts_b, exactly one part is ``MASK``,
        parts_b may be empty. The groups only matter when the input is too long (``fit``)."""
        raise NotImplementedError

    def fit(self, parts_a: list[tuple[list[int], bool]], parts_b: list[tuple[list[int], bool]], budget: int,
            what: str) -> None:
        """Cut the tokenized groups in place to ``budget`` tokens: mGLM's rule (``tasks.base.fit_pet_parts``)."""
        fit_pet_parts(parts_a, parts_b, budget, what)

    def normalize_label(self, label: str, where: str) -> str:
        return label.strip()

    # encoding -------------------------------------------------------------------------------------
    def encode(self, example: Example) -> dict[str, Any]:
        """Tokenize each part separately; while ``[CLS] parts_a parts_b <eos> <sop>`` exceeds ``seq_length``,
        cut one token by ``fit`` (mGLM ``tasks/superglue/pvp.py``: ``PVP.encode`` and ``PVP.truncate``)."""
        tok = self.tokenizer
        raw_a, raw_b = self.pattern(example)
        assert sum(1 for p, _ in raw_a + raw_b if p is MASK) == 1, "a pattern needs exactly one [MASK]"
        parts_a, parts_b = ([([tok.mask_id] if p is MASK else tok.encode(p), short) for p, short in raw]
                            for raw in (raw_a, raw_b))
        # [CLS] ... <eos> <sop> take 3 of the --seq-length positions.
        self.fit(parts_a, parts_b, self.seq_length - 3,
                 f"{example.source}: task {self.name} with --seq-length {self.seq_length}")
        ids = [tok.cls_id]
        for t, _ in parts_a + parts_b:
            ids.extend(t)
        ids.append(tok.eos_id)
        mask_pos = ids.index(tok.mask_id)
        return {"input_ids": ids, "mask_pos": mask_pos,
                "label": -1 if example.label is None else self.labels.index(example.label)}

    def collate(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Pad to the longest sample (+1 for ``<sop>``). Tokens after ``<sop>`` cannot influence it (causal),
        so dynamic padding gives the same scores as padding to ``seq_length``."""
        B = len(samples)
        L = max(len(s["input_ids"]) for s in samples) + 1
        ids = torch.full((B, L), self.tokenizer.pad_id, dtype=torch.long)
        pos = torch.arange(L).repeat(B, 2, 1)  # [B, 2, L]
        pos[:, 1] = 0
        sep = torch.empty(B, dtype=torch.long)
        for b, s in enumerate(samples):
            n = len(s["input_ids"])
            ids[b, :n] = torch.tensor(s["input_ids"])
            ids[b, n] = self.tokenizer.sop_id
            pos[b, 0, n] = s["mask_pos"]
            pos[b, 1, n] = 1
            sep[b] = n
        labels = torch.tensor([s["label"] for s in samples], dtype=torch.long)
        return {"text": ids, "position_id": pos, "sep": sep, "label": labels}

    # model --------------------------------------------------------------------------------------
    def scores(self, engine, batch: dict[str, Any], parallel_state: ParallelState) -> torch.Tensor:
        text, sep = batch["text"], batch["sep"]
        at_sop = torch.zeros_like(text, dtype=torch.bool)
        at_sop[torch.arange(text.size(0), device=text.device), sep] = True  # the one scored position per row
        logits, _ = engine(text, batch["position_id"], sep, logit_mask=at_sop)  # [B, V/p]
        return cloze_scores(logits, sep, self.label_ids.to(logits.device), parallel_state)

    def loss(self, engine, batch: dict[str, Any], parallel_state: ParallelState) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(self.scores(engine, batch, parallel_state), batch["label"])

    def predict(self, engine, batch: dict[str, Any], parallel_state: ParallelState) -> list[str]:
        return [self.labels[i] for i in self.scores(engine, batch, parallel_state).argmax(-1).tolist()]
