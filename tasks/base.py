"""Shared finetuning machinery: examples, TSV reading, epoch batching, evaluation with DP gathering, selection.

A task (``tasks/xnli.py``, ``tasks/pawsx.py``, ...) is a small subclass of a task family
(``tasks/classification.py``) that only states its languages, files, labels and prompt. Everything two
tasks share lives here:

- ``Example`` and ``read_tsv`` (tab-split, no quote handling, exactly as XTREME and mGLM read the files;
  a malformed row is an error naming file and line, never skipped);
- ``epoch_order`` / ``EpochBatches``: the training stream as a pure function of (seed, step, DP rank), so
  ``--load`` resumes on exactly the batches the uninterrupted run would have seen;
- ``evaluate``: forward over every language's examples, each DP rank on its strided slice (padded to the
  same number of batches so collective-using engines stay in step), predictions gathered to every rank;
- ``language_scores`` / ``selection_score``: per-language metrics, the unweighted mean (XTREME) and the
  pooled score (mGLM), and the model-selection value named by ``--select-on``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from common.errors import DataError
from tasks.metrics import aggregate_by_language

if TYPE_CHECKING:
    from mpu.initialize import ParallelState


@dataclass(frozen=True)
class Example:
    """One labelled (or unlabelled: ``label=None``) input pair with where it came from."""

    uid: str  # "<split>-<lang>-<row>", stable across runs
    lang: str
    text_a: str
    text_b: str
    label: str | None
    source: str  # "file:line" for error messages


def read_tsv(path: Path, columns: Sequence[int] | Sequence[str], header: bool, expect: str,
             min_fields: int | None = None, max_fields: int | None = None) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, selected fields) of a tab-separated file; fields are not unquoted.

    ``columns``: indices, or names looked up in the header line. Rows with fewer than ``min_fields`` fields
    (default: enough for every selected column) or more than ``max_fields`` (default: as many as the header
    has, or as many as ``columns`` reach without a header) raise DataError naming file, line and
    ``expect``: an extra field is a tab inside a text or a shifted row, and taking the first fields of it
    would silently read the wrong text or label. Completely empty lines carry no data and are passed over.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    with open(path, "rb") as f:
        lines = utf8_lines(f, path)
        idx: list[int]
        if header:
            try:
                _, head = next(lines)
            except StopIteration:
                raise DataError(f"{path}: empty file; expected a header line ({expect})") from None
            names = head.rstrip("\r\n").removeprefix("\ufeff").split("\t")  # a byte-order mark is no name
            if all(isinstance(c, str) for c in columns):
                missing = [c for c in columns if c not in names]
                if missing:
                    raise DataError(f"{path}:1: header {names} lacks column(s) {missing}; expected {expect}")
                idx = [names.index(c) for c in columns]  # type: ignore[arg-type]
            else:
                idx = list(columns)  # type: ignore[arg-type]
        else:
            idx = list(columns)  # type: ignore[arg-type]
        need = min_fields if min_fields is not None else max(idx) + 1
        most = max_fields if max_fields is not None else (len(names) if header else max(idx) + 1)
        for lineno, line in lines:
            line = line.rstrip("\r\n")
            if not line:
                continue
            fields = line.split("\t")
            if len(fields) < need:
                raise DataError(f"{path}:{lineno}: {len(fields)} tab-separated field(s); expected {expect}")
            if len(fields) > most:
                raise DataError(f"{path}:{lineno}: {len(fields)} tab-separated fields, more than the {most} "
                                f"columns of the file (a tab inside a text?); expected {expect}")
            yield lineno, [fields[i] if i < len(fields) else "" for i in idx]


def utf8_lines(f, path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of a file opened in binary mode, each line decoded on its own so that bytes that
    are not UTF-8 are reported with their file and line (a text-mode read fails a chunk later, unnamed)."""
    for lineno, raw in enumerate(f, start=1):
        try:
            yield lineno, raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{path}:{lineno}: not UTF-8 text (byte {e.start + 1} of the line: {e.reason}); "
                            "expected a UTF-8 file") from None


def read_utf8(path: Path) -> str:
    """The text of a UTF-8 file; bytes that are not UTF-8 are one DataError naming the file and line."""
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        lineno = raw.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path}:{lineno}: not UTF-8 text ({e.reason}); expected a UTF-8 file") from None


def check_label(label: str, labels: Sequence[str], where: str) -> str:
    label = label.strip()
    if label not in labels:
        raise DataError(f"{where}: unknown label {label!r}; expected one of {list(labels)}")
    return label


def fit_parts(parts: list[tuple[list[int], bool]], budget: int, what: str) -> list[tuple[list[int], bool]]:
    """Shorten ``(token ids, shortenable)`` parts in place until their total length is at most ``budget``:
    one token at a time from the end of the currently longest shortenable part (the first of equals).
    ``what`` names the input in the error raised when the fixed parts alone do not fit.

    The rule of our own-data tasks (``--task cloze / seq2seq``): no field is emptied while a longer one
    remains. The benchmark cloze tasks cut as mGLM does instead (``fit_pet_parts``)."""
    total = sum(len(t) for t, _ in parts)
    while total > budget:
        lens = [len(t) if short else -1 for t, short in parts]
        j = max(range(len(parts)), key=lambda i: lens[i])
        if lens[j] <= 0:
            raise ValueError(_no_fit(what, total, budget))
        parts[j][0].pop()
        total -= 1
    return parts


def fit_pet_parts(parts_a: list[tuple[list[int], bool]], parts_b: list[tuple[list[int], bool]], budget: int,
                  what: str) -> None:
    """Shorten mGLM's two part groups in place until ``len(a) + len(b) <= budget``, as its PET-style
    ``PVP.truncate`` (Multilingual-GLM ``tasks/superglue/pvp.py``) does, one token per step:

        S(g) = total length of the shortenable parts of group g
        g    = a   if parts_b is empty or S(a) > S(b)   else b      (a tie cuts b)
        drop the last token of the LAST non-empty shortenable part of g

    So within a group the later text is cut to nothing before an earlier one is touched (XNLI, one group
    premise ... hypothesis: the hypothesis goes first, whatever the premise's length), and two groups are
    cut alternately towards equal shortenable lengths (PAWS-X). The chosen group has a non-empty part
    unless both S are 0, i.e. only the fixed parts are left: then a ValueError naming ``what`` (mGLM
    fails there on an empty ``max()``)."""
    total = sum(len(t) for t, _ in parts_a + parts_b)
    while total > budget:
        short_a = sum(len(t) for t, s in parts_a if s)
        group = parts_a if not parts_b or short_a > sum(len(t) for t, s in parts_b if s) else parts_b
        cuttable = [t for t, s in group if s and t]
        if not cuttable:
            raise ValueError(_no_fit(what, total, budget))
        cuttable[-1].pop()
        total -= 1


def _no_fit(what: str, total: int, budget: int) -> str:
    return f"{what}: the fixed parts alone need {total} tokens, more than the {budget} available"


# ------------------------------------------------------------------------------------------ batching
def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """A seeded permutation of ``range(n)``, a pure function of (seed, epoch)."""
    return np.random.default_rng([seed, epoch, 0x7A5C]).permutation(n)


@dataclass(frozen=True)
class EpochBatches:
    """Micro-batch ``k`` of the training stream for one data-parallel rank, as a pure function of k.

    One optimizer step consumes ``grad_accum`` micro-batches on each of ``dp_size`` ranks, i.e. a global
    batch of ``G = micro * dp_size * grad_accum`` examples. An epoch is ``ceil(n / G)`` steps over a seeded
    permutation; its last global batch is filled up from the start of the same permutation so every
    micro-batch has the same size (stable shapes, equal DP weights).
    """

    num_examples: int
    micro_batch: int
    dp_size: int
    grad_accum: int
    seed: int

    @property
    def global_batch(self) -> int:
        return self.micro_batch * self.dp_size * self.grad_accum

    @property
    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(self.num_examples / self.global_batch))

    def indices(self, micro_step: int, dp_rank: int) -> np.ndarray:
        """Example indices of micro-batch ``micro_step`` (counted over the whole run) on ``dp_rank``."""
        step, acc = divmod(micro_step, self.grad_accum)
        epoch, in_epoch = divmod(step, self.steps_per_epoch)
        order = epoch_order(self.num_examples, self.seed, epoch)
        start = in_epoch * self.global_batch + (acc * self.dp_size + dp_rank) * self.micro_batch
        return order[np.arange(start, start + self.micro_batch) % self.num_examples]

    def iterate(self, start_step: int, dp_rank: int) -> Iterator[np.ndarray]:
        k = start_step * self.grad_accum
        while True:
            yield self.indices(k, dp_rank)
            k += 1


def shard_for_eval(n: int, batch_size: int, dp_rank: int, dp_size: int) -> list[list[int]]:
    """This rank's evaluation batches: indices ``dp_rank, dp_rank + dp_size, ...`` padded with -1 so every
    rank runs the same number of batches (ZeRO-3 gathers parameters collectively in forward)."""
    per_rank = math.ceil(n / dp_size) if n else 0
    mine = [i * dp_size + dp_rank for i in range(per_rank)]
    mine = [i if i < n else -1 for i in mine]
    return [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]


def gather_objects(obj: Any, group) -> list[Any]:
    """All-gather a picklable object over ``group`` (one process: ``[obj]``)."""
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_world_size(group) == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(out, obj, group=group)
    return out


def evaluate(predict_batch: Callable[[list[Any]], list[str]], samples: Sequence[Any], batch_size: int, parallel_state: ParallelState,
             desc: str = "eval", rank: int = 0) -> list[str]:
    """Predictions for every sample, in order, on every rank.

    ``predict_batch(samples) -> predicted label strings``. Each DP rank predicts its strided slice
    (progress shown on global rank 0); the slices are gathered over the DP group and put back in order.
    """
    import torch

    batches = shard_for_eval(len(samples), batch_size, parallel_state.dp_rank, parallel_state.dp_size)
    mine: dict[int, str] = {}
    from common.progress import report_progress

    bar = report_progress(total=len(batches), desc=desc, unit="batch", enabled=rank == 0, leave=False,
                          mininterval=1.0)
    with torch.no_grad():
        for idx in batches:
            real = [i if i >= 0 else 0 for i in idx]  # padding rows re-run sample 0; dropped below
            preds = predict_batch([samples[i] for i in real])
            for i, p in zip(idx, preds, strict=True):
                if i >= 0:
                    mine[i] = p
            bar.update(1)
    bar.close()
    merged: dict[int, str] = {}
    for part in gather_objects(mine, parallel_state.dp_group if parallel_state.dp_size > 1 else None):
        merged.update(part)
    assert len(merged) == len(samples), (len(merged), len(samples))
    return [merged[i] for i in range(len(samples))]


# ------------------------------------------------------------------------------------------ metrics
def language_scores(preds: dict[str, list[Any]], examples: dict[str, list[Any]],
                    metrics: Callable[[Sequence[Any], Sequence[Any]], dict[str, float]],
                    has_gold: Callable[[Sequence[Any]], bool]) -> dict[str, Any]:
    """``{lang: {metric: score}}`` for every labelled language, plus ``avg`` (unweighted mean over languages,
    XTREME) and ``pooled`` (all examples together, as mGLM reports). ``metrics(preds, examples)`` returns
    every metric of one list; unlabelled languages (``has_gold`` false) are left out."""
    per: dict[str, dict[str, float]] = {}
    pooled_p: list[Any] = []
    pooled_e: list[Any] = []
    for lang in preds:
        ex = examples[lang]
        if not ex or not has_gold(ex):
            continue
        per[lang] = dict(metrics(preds[lang], ex))
        pooled_p += preds[lang]
        pooled_e += ex
    if not per:
        return {}
    out: dict[str, Any] = aggregate_by_language(per)
    out["pooled"] = dict(metrics(pooled_p, pooled_e))
    return out


SELECT_CHOICES = "'<lang>-dev' (e.g. en-dev), 'avg-dev' (unweighted language mean) or 'all-dev' (pooled, mGLM)"


def selection_key(select_on: str) -> str:
    """The entry of the dev scores that ``--select-on`` names: a language, ``avg`` or ``pooled``."""
    if not select_on.endswith("-dev") or len(select_on) <= 4:
        raise ValueError(f"--select-on {select_on!r}: expected {SELECT_CHOICES}")
    key = select_on[:-4]
    return {"all": "pooled"}.get(key, key)


def default_select_on(dev: dict[str, list[Any]], requested: Sequence[str] | None,
                      has_gold: Callable[[Sequence[Any]], bool]) -> tuple[str | None, str]:
    """``--select-on`` when the command line does not give it: English dev when the data has a labelled
    one (XTREME's zero-shot protocol), else the dev set of the first requested language (``--languages``
    order), else of the first language read. Returns ``(choice or None, why)`` for the log."""
    def usable(lang: str) -> bool:
        return bool(dev.get(lang)) and has_gold(dev[lang])

    if usable("en"):
        return "en-dev", "English dev set"
    why = "no labelled English dev set"
    for lang in list(requested or ()) + list(dev):
        if usable(lang):
            which = "the first requested language's" if requested else "the first language's"
            return f"{lang}-dev", f"{why}; {which} dev set"
    return None, f"{why}, and no other labelled dev set"


def format_table(title: str, scores: dict[str, Any], metrics: Sequence[str], absent: Sequence[str] = (),
                 order: Sequence[str] = ()) -> str:
    """A readable table: languages across (avg and pooled last), one row per metric. ``absent``: languages
    of the benchmark whose file is missing or empty, shown as ``absent`` columns (not silently left out;
    they are not in avg or pooled either). ``order``: the benchmark's language order, which the columns
    follow when given (others after them, as they come)."""
    if not scores and not absent:
        return f"{title}: no labelled examples"
    keys = [k for k in scores if k not in ("avg", "pooled")] + [k for k in absent if k not in scores]
    rank = {lang: i for i, lang in enumerate(order)}
    keys = sorted(keys, key=lambda k: rank.get(k, len(rank)))  # stable: unknown keys keep their order
    keys += [k for k in ("avg", "pooled") if k in scores]
    width = max(7, *(len(k) + 1 for k in keys))
    lines = [f"{title:<14}" + "".join(f"{k:>{width}}" for k in keys)]
    for m in metrics:
        lines.append(f"{m:<14}" + "".join(f"{scores[k][m]:>{width}.2f}" if k in scores else f"{'absent':>{width}}"
                                          for k in keys))
    if not scores:
        lines.append("(no labelled examples)")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------- interface
class Task:
    """What a finetuning task supplies to ``finetune_glm.py``; one instance per run.

    Subclasses set the class attributes and implement the readers; a task family
    (``tasks.classification.ClozeClassificationTask``, ``tasks.seq2seq.GenerationTask``) implements
    ``encode``/``collate``/``loss``/``predict``.

    Examples and samples. ``read_split`` gives examples (any frozen dataclass with ``uid`` and ``lang``;
    ``Example`` for sentence pairs). The model sees samples (dicts): by default one per example
    (``encode``); a task whose examples do not fit one input (QA contexts cut into windows) overrides
    ``train_samples`` / ``eval_samples`` and ``aggregate``, which turns the per-sample predictions back
    into one prediction per example. Metrics are computed per example: every question of a QA set stays in
    the denominator whatever happened to its windows.
    """

    name: str = ""
    languages: tuple[str, ...] = ()  # every language the benchmark defines
    train_language: str = "en"  # zero-shot transfer: train on this language only
    metric_name: str = "accuracy"  # the metric model selection uses
    metric_names: tuple[str, ...] = ("accuracy",)  # every metric reported (metric_name among them)
    default_pattern_id: int = 0
    # The task's own command-line options: a frozen dataclass whose fields become flags of
    # ``finetune_glm.py --task NAME`` (its class attributes TITLE and HELP: the --help group and lines), with
    # ``validate(self, finetune_args)``, the one place each option is checked. None: no options of its own.
    options_cls: ClassVar[type | None] = None
    reads_data_dir: ClassVar[bool] = True  # False: the task reads files named by its own options
    # Defaults the task sets for finetuning flags (its own or the shared ones) that the command line omits.
    flag_defaults: ClassVar[Mapping[str, Any]] = MappingProxyType({})

    def __init__(self, tokenizer, seq_length: int, pattern_id: int | None = None, options: Any = None):
        """``options``: an instance of ``options_cls`` (generation lengths, beams, ...); None in unit tests."""
        self.tokenizer = tokenizer
        self.seq_length = seq_length
        self.pattern_id = self.default_pattern_id if pattern_id is None else pattern_id
        self.options = options

    # data -------------------------------------------------------------------------------------
    def read_split(self, data_dir: Path, split: str, languages: Sequence[str] | None) -> dict[str, list[Any]]:
        """``{lang: examples}`` of ``split`` (train | dev | test). ``languages=None``: every language whose
        file is present (train: the train language); an explicit list makes a missing file an error."""
        raise NotImplementedError

    def expected_languages(self, split: str) -> tuple[str, ...]:
        """The languages a complete ``split`` of the benchmark has (default: ``languages``). One of them that
        ``read_split(..., None)`` does not return, or returns empty, is reported as absent by the run."""
        return tuple(self.languages)

    def encode(self, example: Any) -> dict[str, Any]:
        raise NotImplementedError

    def train_samples(self, examples: Sequence[Any]) -> list[dict[str, Any]]:
        """Training samples of the training examples (default: one ``encode`` each)."""
        return [self.encode(e) for e in examples]

    def eval_samples(self, examples: Sequence[Any]) -> list[dict[str, Any]]:
        """Evaluation samples of one language's examples (default: one ``encode`` each)."""
        return [self.encode(e) for e in examples]

    def aggregate(self, examples: Sequence[Any], samples: Sequence[dict[str, Any]],
                  sample_preds: Sequence[Any]) -> list[Any]:
        """One prediction per example from the per-sample predictions (default: they are the same)."""
        assert len(sample_preds) == len(examples), (len(sample_preds), len(examples))
        return list(sample_preds)

    def collate(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        raise NotImplementedError

    # model ------------------------------------------------------------------------------------
    def loss(self, engine, batch: dict[str, Any], parallel_state: ParallelState) -> Any:
        """Scalar training loss of one collated micro-batch (already on the device)."""
        raise NotImplementedError

    def predict(self, engine, batch: dict[str, Any], parallel_state: ParallelState) -> list[Any]:
        """Predictions (picklable) of one collated batch (already on the device), one per sample."""
        raise NotImplementedError

    # metrics ----------------------------------------------------------------------------------
    def gold(self, example: Any) -> Any:
        return example.label

    def has_gold(self, examples: Sequence[Any]) -> bool:
        """Whether a language's examples can be scored (XTREME test files carry no labels)."""
        return all(self.gold(e) is not None for e in examples)

    def metric(self, preds: Sequence[Any], golds: Sequence[Any]) -> float:
        from tasks.metrics import accuracy

        return accuracy(preds, golds)

    def metrics(self, preds: Sequence[Any], examples: Sequence[Any]) -> dict[str, float]:
        """Every reported metric (``metric_names``) of one list of predictions against its examples."""
        return {self.metric_name: self.metric(preds, [self.gold(e) for e in examples])}

    def prediction_records(self, examples: Sequence[Any], preds: Sequence[Any]) -> list[dict[str, Any]]:
        """Rows of ``predictions/<task>-<split>-<lang>.jsonl``."""
        return [{"idx": e.uid, "label": p} for e, p in zip(examples, preds, strict=True)]

    def write_extra_predictions(self, folder: Path, split: str, lang: str, examples: Sequence[Any],
                                preds: Sequence[Any]) -> None:
        """Task-specific files next to the JSONL predictions (e.g. the official ``{qid: answer}`` JSON)."""
