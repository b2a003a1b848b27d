"""Generation tasks (QA as generation, summarization): a source with one ``[sMASK]`` blank, the answer or
summary generated into it, as Multilingual-GLM finetunes them (its ``tasks/seq2seq/dataset.py``).

Training input of a sample with source ``s`` (``n`` tokens, blank at ``p``) and target ``t`` (``T`` tokens, the
last one ``<eop>``)::

    tokens      s_0 ... s_{n-1}   <sop>  t_1 ... t_{T-1}       sep = n (the source is bidirectional)
    positions   0   ...   n-1       p     p  ...   p
    block pos   0   ...   0         1     2  ...   T
    labels      -   ...   -        t_1   t_2 ...   t_T  (= <eop>)

so the loss is the token cross entropy of the target given the source, averaged over every target token
of the micro-batch (``--label-smoothing`` eps: ``(1 - eps) CE + eps mean_v(-log p_v)``). Rows are
right-padded after their target: padding sits in the causal part behind every real token, so no real
token attends to it (the reference pads the source instead and attends to the padding; we do not).

Evaluation decodes the blank with ``model.generation.generate_blank`` (key/value cache; beam search when
``--num-beams > 1``, with ``--length-penalty``, ``--no-repeat-ngram-size``, ``--min-tgt-length``,
``--out-seq-length``). A sample's prediction is ``(text, score)``; ``aggregate`` turns those into one
prediction per example (QA: over the windows of a question).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from tasks.base import Task

if TYPE_CHECKING:
    from mpu.initialize import ParallelState


@dataclass(frozen=True)
class GenerationOptions:
    """The options of every generation task (``--task`` xquad, mlqa, tydiqa, ncls, scisummnet_zh, seq2seq);
    ``--seq-length`` is the source length."""

    tgt_seq_length: int = 64  # training targets (end token appended first) are cut to this many tokens
    out_seq_length: int | None = None  # most tokens generated at evaluation (default: --tgt-seq-length)
    min_tgt_length: int = 0  # the end token is banned before this many tokens
    num_beams: int = 1  # beam search when > 1, else greedy
    length_penalty: float = 0.0  # beam score = sum log p / len**length_penalty (GLM's default 0)
    no_repeat_ngram_size: int = 0
    label_smoothing: float = 0.0  # loss = (1 - eps) CE + eps * mean over the vocabulary of -log p

    TITLE: ClassVar[str] = "generation (the task's own options)"
    HELP: ClassVar[dict[str, str]] = {
        "tgt_seq_length": "training targets, end token appended first, are cut to this many tokens (mGLM)",
        "out_seq_length": "most tokens generated at evaluation (default --tgt-seq-length)",
        "min_tgt_length": "the end token is banned before this many generated tokens",
        "num_beams": "beam search with this many beams (1 = greedy)",
        "length_penalty": "beam score = sum of log-probs / length**length_penalty",
        "no_repeat_ngram_size": "never repeat an n-gram of this size in one output",
        "label_smoothing": "label smoothing eps of the token cross entropy",
    }

    def validate(self, finetune: Any) -> None:
        """Each check once, here (``finetune``: the run's FinetuneArgs, for checks across options)."""
        if self.tgt_seq_length < 2:
            raise ValueError(f"--tgt-seq-length {self.tgt_seq_length}: expected >= 2 (a token and the end token)")
        if self.out_seq_length is not None and self.out_seq_length < 1:
            raise ValueError(f"--out-seq-length {self.out_seq_length}: expected >= 1")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"--label-smoothing {self.label_smoothing}: expected a value in [0, 1)")
        if self.num_beams < 1 or self.no_repeat_ngram_size < 0 or self.min_tgt_length < 0:
            raise ValueError("--num-beams must be >= 1, --no-repeat-ngram-size and --min-tgt-length >= 0")


class GenerationTask(Task):
    """Sources with one blank and generated targets. Subclasses implement ``source_parts`` and
    ``target_text`` (and usually ``aggregate`` / ``metrics``)."""

    metric_name = "rouge-l"
    metric_names: tuple[str, ...] = ("rouge-l",)
    options_cls: ClassVar[type] = GenerationOptions

    def __init__(self, tokenizer, seq_length: int, pattern_id: int | None = None, options: Any = None):
        from model.generation import GenerationConfig, SpecialTokens

        super().__init__(tokenizer, seq_length, pattern_id, options)
        o = options
        self.tgt_length = o.tgt_seq_length if o is not None else 64
        self.label_smoothing = o.label_smoothing if o is not None else 0.0
        self.generation = GenerationConfig(
            max_new_tokens=(o.out_seq_length or o.tgt_seq_length) if o is not None else self.tgt_length,
            min_new_tokens=o.min_tgt_length if o is not None else 0,
            num_beams=o.num_beams if o is not None else 1,
            length_penalty=o.length_penalty if o is not None else 0.0,
            no_repeat_ngram_size=o.no_repeat_ngram_size if o is not None else 0,
        ).validate()
        self.special = SpecialTokens.from_tokenizer(tokenizer)

    # encoding -------------------------------------------------------------------------------------
    def source_ids(self, example: Any) -> list[int]:
        """The source token ids, ``[CLS]`` first, exactly one ``[sMASK]``, at most ``seq_length`` tokens."""
        raise NotImplementedError

    def target_text(self, example: Any) -> str | None:
        """The training target (None: nothing to learn from this example)."""
        raise NotImplementedError

    def target_ids(self, text: str) -> list[int]:
        """``(encode(" " + text) + [<eop>])[:tgt_seq_length]``, mGLM's ``Seq2SeqDataset``: the end token is
        appended before the cut, so a target longer than ``tgt_seq_length - 1`` tokens is trained without
        one (the model is not taught to stop where the cut happens to fall)."""
        return (self.tokenizer.encode(" " + text.strip()) + [self.tokenizer.eop_id])[: self.tgt_length]

    def make_sample(self, source: list[int], target: str | None, example_index: int) -> dict[str, Any]:
        blanks = (self.tokenizer.smask_id, self.tokenizer.gmask_id)
        masks = [i for i, t in enumerate(source) if t in blanks]
        assert len(masks) == 1, f"a source needs exactly one [sMASK] or [gMASK], found {len(masks)}"
        return {"source": source, "mask_pos": masks[0],
                "target": self.target_ids(target) if target is not None else [], "example": example_index}

    def encode(self, example: Any, example_index: int = 0) -> dict[str, Any]:
        return self.make_sample(self.source_ids(example), self.target_text(example), example_index)

    def train_samples(self, examples: Sequence[Any]) -> list[dict[str, Any]]:
        return [self.encode(e, i) for i, e in enumerate(examples) if self.target_text(e) is not None]

    def eval_samples(self, examples: Sequence[Any]) -> list[dict[str, Any]]:
        return [self.make_sample(self.source_ids(e), None, i) for i, e in enumerate(examples)]

    def aggregate(self, examples, samples, sample_preds) -> list[str]:
        """The generated text of each example (one sample per example; the beam score is dropped). Tasks with
        several samples per example (QA windows) override this."""
        assert len(sample_preds) == len(examples), (len(sample_preds), len(examples))
        return [p[0] if isinstance(p, tuple | list) else p for p in sample_preds]

    def collate(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Training layout of the module docstring, right-padded to the longest row; the raw sources and
        blank positions ride along for ``predict``."""
        tok = self.tokenizer
        B = len(samples)
        L = max(len(s["source"]) + max(len(s["target"]), 1) for s in samples)
        ids = torch.full((B, L), tok.pad_id, dtype=torch.long)
        labels = torch.full((B, L), -100, dtype=torch.long)
        pos = torch.zeros(B, 2, L, dtype=torch.long)
        sep = torch.empty(B, dtype=torch.long)
        for b, s in enumerate(samples):
            src, tgt, n = s["source"], s["target"], len(s["source"])
            ids[b, :n] = torch.tensor(src)
            pos[b, 0, :n] = torch.arange(n)
            sep[b] = n
            if tgt:
                T = len(tgt)
                ids[b, n:n + T] = torch.tensor([tok.sop_id, *tgt[:-1]])
                labels[b, n:n + T] = torch.tensor(tgt)
                pos[b, 0, n:n + T] = s["mask_pos"]
                pos[b, 1, n:n + T] = torch.arange(1, T + 1)
            pos[b, 0, n + len(tgt):] = n - 1  # padding: any valid position (nothing real attends to it)
        return {"text": ids, "position_id": pos, "sep": sep, "labels": labels,
                "sources": [s["source"] for s in samples], "mask_positions": [s["mask_pos"] for s in samples]}

    # model --------------------------------------------------------------------------------------
    def loss(self, engine, batch: dict[str, Any], parallel_state: ParallelState) -> torch.Tensor:
        from mpu.cross_entropy import vocab_parallel_smoothed_cross_entropy

        labels = batch["labels"]  # [B, L], -100 off target
        mask = labels >= 0
        # Logits of the target positions only: [N, V/p].
        logits, _ = engine(batch["text"], batch["position_id"], batch["sep"], logit_mask=mask)
        per_token = vocab_parallel_smoothed_cross_entropy(logits.float(), labels[mask],
                                                          self.label_smoothing, parallel_state)  # [N]
        return per_token.sum() / mask.sum().clamp(min=1)

    def predict(self, engine, batch: dict[str, Any], parallel_state: ParallelState) -> list[tuple[str, float]]:
        """``(generated text, score)`` per sample (beam score: sum log p / len**length_penalty)."""
        from model.generation import all_ranks_done, blank_layout, generate_blank

        model = getattr(engine, "module", engine)
        layouts = [blank_layout(src, [], self.special.sop_id) for src in batch["sources"]]
        # DP ranks decode different batches; under ZeRO-3 every forward gathers parameters from all of them,
        # so they stop together (each rank's results are unchanged by the extra padded steps).
        sync = all_ranks_done(parallel_state.dp_group, batch["text"].device) if parallel_state.dp_size > 1 else None
        results = generate_blank(model, self.special, layouts, batch["mask_positions"], self.generation,
                                 stop_sync=sync)
        return [(self.tokenizer.decode(r[0].tokens).strip(), float(r[0].score)) for r in results]

    def prediction_records(self, examples: Sequence[Any], preds: Sequence[Any]) -> list[dict[str, Any]]:
        return [{"idx": e.uid, "prediction": p, "gold": self.gold(e)} for e, p in zip(examples, preds, strict=True)]
