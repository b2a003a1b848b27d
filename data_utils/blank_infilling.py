"""The blank-infilling collator (GLM's ``ConstructBlockStrategy``): span sampling, Part A / Part B, positions.

Per batch one objective is drawn: ``bert`` (prob ``bert_prob``: Poisson(``avg_block_length``) token spans,
truncated to lengths 1..39, covering ``bert_ratio`` = 15% of each sample, ``[MASK]``), ``sentence``
(prob ``gap_sentence_prob``: whole sentences covering ``gap_sentence_ratio`` = 15%, ``[sMASK]``), else
``gpt`` (``[gMASK]``: one long span of length >= ``gpt_min_ratio`` * the shortest sample, either infilled
(prob ``gpt_infill_prob``, single-document samples only) or generated as the suffix).

For a sample ``x`` (length n) with sorted, disjoint spans ``(s_k, e_k)`` the output is

    Part A = x with each span replaced by one mask token          (bidirectional context; sep = |Part A|)
    Part B = for each span, in shuffled order: [sop] x[s:e]       (causal)
    target = Part A tokens, then x[s:e] [eop] per span
    position_id[0] = compressed positions: pos = cumsum(v) - 1 with v = 0 on x[s+1:e] (a span collapses to
                     the position of its mask token); Part B tokens carry pos[s]
    position_id[1] = block positions: 0 on Part A, 1 .. len+1 within each Part-B span
    loss_mask      = 0 on Part A, 1 on Part B (the data's own loss mask is ignored in span modes, as in GLM)

so a sample grows by 2 tokens per span. In gpt suffix mode the sequence is ``src [gMASK] [sop] tgt[:-1]`` with
targets ``src [gMASK] tgt`` (no ``[eop]``: the target ends with the document's eos), positions ``0..|src|``
then ``|src|`` repeated, block positions 0 on ``src``, then 0 (``[gMASK]``), 1 (``[sop]``), 2, ...

Four options of the reference change a batch before / while building it (all off by default; when off
they draw nothing from the generator, so the stream is the same as without them):

* ``short_seq_prob``: with this probability per batch every sample is cut into
  ``k = (seq_length - 1) // target_length`` random sub-sequences, ``target_length`` uniform in
  ``[lo, seq_length - 1)`` with ``lo = min(32, (seq_length - 1) // 4)`` (GLM's 32 for ``seq_length >= 129``;
  below that a quarter of the sequence, so tiny test sequences still split into a few pieces;
  ``target_length = 1`` when the range is empty). A cut starts at a random token and moves left to the nearest sentence start (after a
  sentence end, eos or ``[CLS]``; never on eos / ``[CLS]``), ends ``target_length`` later and moves left to
  the nearest sentence end or eos unless that leaves fewer than ``target_length // 2`` tokens. Each piece is
  re-prefixed with ``[CLS]`` (loss mask 0), so the batch grows to ``k * B`` rows (as in GLM).
* ``single_span_prob``: with this probability per batch the objective is ``bert`` with one Poisson-length
  span per sample (instead of spans covering ``bert_ratio``).
* ``block_mask_prob``: in ``bert`` mode each Part-B *input* span token (not ``[sop]``, never a target) is
  replaced by ``[dBLOCK]`` with this probability (GLM drew these from the unseeded global ``random``; here
  they come from the batch generator, so batches stay reproducible).
* ``context_mask_ratio``: in ``bert`` mode, ``int(context_mask_ratio * n)`` Part-A tokens (n = the sample's
  length before masking) are replaced by ``[dBLOCK]`` in the *input* (Part-A targets and Part B are unchanged),
  drawn without replacement from the candidates: kept Part-A tokens at distance 1 .. ``context_mask_range`` (3)
  from a mask token, never ``[CLS]`` or eos (``context_mask_candidates``). When there are fewer candidates than
  that, all of them are replaced. GLM draws from the first / last ``context_mask_range`` tokens of each Part-A
  segment, which also takes the last tokens of the text (no span border there) and can take ``[CLS]``, and it
  fails when the candidates run short; here both are excluded and the count is capped.

The batch is right-padded with zeros (tokens, targets, loss mask, positions) to the longest sample, or to a
multiple of ``pad_to_multiple``. Every random choice uses the generator passed in.

Batch format (what ``GLMModel`` consumes)::

    {"text": Long[B, L], "target": Long[B, L], "loss_mask": Long[B, L], "position_id": Long[B, 2, L],
     "sep": Long[B] (Part A length per sample), "mode": "bert" | "sentence" | "gpt"}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

MODES = ("bert", "sentence", "gpt")  # the pretraining objectives; the one list of their names (loss logging,
# validation and tools/plot.py report ``loss_<mode>`` for each)


@dataclass(frozen=True)
class BlankInfillingConfig:
    bert_prob: float = 0.5
    gap_sentence_prob: float = 0.3  # gpt gets 1 - bert_prob - gap_sentence_prob
    bert_ratio: float = 0.15
    gap_sentence_ratio: float = 0.15
    avg_block_length: float = 3.0
    max_block_length: int = 40  # span lengths 1 .. max_block_length - 1
    gpt_infill_prob: float = 0.5
    gpt_min_ratio: float = 0.25
    shuffle_blocks: bool = True
    block_position_encoding: bool = True
    pad_to_multiple: int | None = None
    block_mask_prob: float = 0.0  # Part-B input span tokens -> [dBLOCK] (bert mode)
    short_seq_prob: float = 0.0  # per batch: cut every sample into shorter [CLS]-prefixed pieces
    single_span_prob: float = 0.0  # per batch: bert mode with one span per sample
    context_mask_ratio: float = 0.0  # bert mode: this fraction of the sample -> [dBLOCK] in Part A near masks
    context_mask_range: int = 3  # Part-A distance from a mask token within which context tokens may be replaced
    seq_length: int | None = None  # the pretraining sequence length (short_seq); default: longest sample

    def __post_init__(self):
        for name in ("bert_prob", "gap_sentence_prob", "bert_ratio", "gap_sentence_ratio", "gpt_infill_prob",
                     "gpt_min_ratio", "block_mask_prob", "short_seq_prob", "single_span_prob", "context_mask_ratio"):
            v = getattr(self, name)
            if not 0 <= v <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        if self.bert_prob + self.gap_sentence_prob > 1 + 1e-9:
            raise ValueError(f"bert_prob + gap_sentence_prob = {self.bert_prob + self.gap_sentence_prob} > 1")
        if self.avg_block_length <= 0 or self.max_block_length < 2:
            raise ValueError("avg_block_length must be > 0 and max_block_length >= 2")
        if self.context_mask_range < 1:
            raise ValueError(f"context_mask_range must be >= 1, got {self.context_mask_range}")
        if self.pad_to_multiple is not None and self.pad_to_multiple < 1:
            raise ValueError(f"pad_to_multiple must be >= 1, got {self.pad_to_multiple}")
        if self.seq_length is not None and self.seq_length < 3:
            raise ValueError(f"seq_length must be >= 3 ([CLS] and at least two tokens), got {self.seq_length}")


def short_seq_target_range(seq_length: int) -> tuple[int, int]:
    """``[lo, hi)`` of the short-sequence ``target_length`` for a pretraining length ``seq_length``.

    GLM: ``[32, seq_length - 1)``. For ``seq_length < 129`` the lower bound is ``(seq_length - 1) // 4``: tiny
    test / CPU sequences still split into up to ~4 pieces, none shorter than a quarter of the sequence (a fixed 32
    would leave an empty or one-value range there); an empty range (``seq_length <= 2``) gives ``[1, 2)``.
    """
    hi = seq_length - 1
    lo = max(1, min(32, hi // 4))
    return (lo, hi) if lo < hi else (1, 2)


def poisson_span_probs(lam: float, max_block_length: int = 40) -> np.ndarray:
    """P(len = k) for k = 1 .. max_block_length - 1: Poisson(lam) pmf restricted to that range, normalised."""
    ks = np.arange(1, max_block_length)
    logp = ks * math.log(lam) - lam - np.array([math.lgamma(k + 1) for k in ks])
    p = np.exp(logp)
    return p / p.sum()


def make_block_data(
    tokens: np.ndarray,
    spans: Sequence[tuple[int, int]],
    mask_id: int,
    sop_id: int,
    eop_id: int,
    order: Sequence[int] | None = None,
    block_position_encoding: bool = True,
    input_mask: np.ndarray | None = None,
    input_mask_id: int | None = None,
) -> dict[str, np.ndarray | int]:
    """Build one sample's Part A + Part B from sorted disjoint ``spans`` ([start, end) into ``tokens``).

    ``order`` is the Part-B order of the spans (indices into ``spans``; default: by position).
    ``input_mask`` (bool [sum of span lengths], in Part-B order) replaces those Part-B *input* span tokens by
    ``input_mask_id`` (``[dBLOCK]``); ``[sop]`` and the targets are never replaced.
    Returns ``text``, ``target``, ``loss_mask`` (int64 [m]), ``position_id`` (int64 [2, m]) and ``sep`` (int),
    with ``m = n + 2 * len(spans)``.
    """
    tokens = np.asarray(tokens, dtype=np.int64)
    n = len(tokens)
    k = len(spans)
    if k == 0:
        z = np.zeros(n, dtype=np.int64)
        return {"text": tokens.copy(), "target": tokens.copy(), "loss_mask": z,
                "position_id": np.stack([np.arange(n, dtype=np.int64), z]), "sep": n}
    sp = np.asarray(spans, dtype=np.int64).reshape(k, 2)
    starts, ends = sp[:, 0], sp[:, 1]
    lens = ends - starts
    assert (lens > 0).all() and starts[0] >= 0 and ends[-1] <= n and (starts[1:] >= ends[:-1]).all(), spans
    # inside[i]: token i is a non-first token of a span (collapses onto the span's first position)
    mark = np.zeros(n + 1, dtype=np.int64)
    np.add.at(mark, starts + 1, 1)
    np.add.at(mark, ends, -1)
    inside = np.cumsum(mark[:n]) > 0
    pos = np.cumsum(~inside) - 1  # compressed positions [n]

    a_tokens = tokens.copy()
    a_tokens[starts] = mask_id
    keep = ~inside
    part_a = a_tokens[keep]
    a_pos = pos[keep]
    sep = len(part_a)

    order = np.arange(k) if order is None else np.asarray(order, dtype=np.int64)
    assert sorted(order.tolist()) == list(range(k)), order
    o_starts, o_lens = starts[order], lens[order]
    seg = o_lens + 1  # [sop] + span
    total = int(seg.sum())
    seg_begin = np.repeat(np.cumsum(seg) - seg, seg)
    offset = np.arange(total) - seg_begin  # 0 at [sop], 1..L on the span tokens
    src = np.repeat(o_starts, seg) + offset  # index of the token at this offset; invalid at offset 0 / L
    b_in = np.where(offset == 0, sop_id, tokens[np.minimum(src - 1, n - 1)])
    if input_mask is not None:
        input_mask = np.asarray(input_mask, dtype=bool)
        is_span = offset > 0  # span-input slots, in Part-B order
        assert len(input_mask) == int(is_span.sum()) and input_mask_id is not None, (len(input_mask), o_lens)
        b_in[np.flatnonzero(is_span)[input_mask]] = input_mask_id
    last = offset == np.repeat(o_lens, seg)
    b_tgt = np.where(last, eop_id, tokens[np.minimum(src, n - 1)])
    b_pos = np.repeat(pos[o_starts], seg)
    b_block = offset + 1 if block_position_encoding else np.ones(total, dtype=np.int64)

    text = np.concatenate([part_a, b_in])
    target = np.concatenate([part_a, b_tgt])
    loss_mask = np.concatenate([np.zeros(sep, dtype=np.int64), np.ones(total, dtype=np.int64)])
    position_id = np.stack([np.concatenate([a_pos, b_pos]),
                            np.concatenate([np.zeros(sep, dtype=np.int64), b_block])])
    return {"text": text, "target": target, "loss_mask": loss_mask, "position_id": position_id, "sep": sep}


def context_mask_candidates(part_a: np.ndarray, mask_id: int, window: int,
                            exclude_ids: Sequence[int] = ()) -> np.ndarray:
    """bool [sep]: Part-A tokens at distance 1 .. ``window`` from a ``mask_id`` token that are neither a mask
    token nor one of ``exclude_ids`` (``[CLS]``, eos): the context next to the span borders."""
    part_a = np.asarray(part_a)
    sep = len(part_a)
    is_mask = part_a == mask_id
    cand = np.zeros(sep + 2 * window, dtype=bool)  # padded by `window` on both sides
    m = np.flatnonzero(is_mask) + window
    for d in range(1, window + 1):
        cand[m - d] = True
        cand[m + d] = True
    cand = cand[window : window + sep]
    return cand & ~is_mask & ~np.isin(part_a, list(exclude_ids))


def document_ranges(tokens: np.ndarray, cls_id: int, eos_id: int) -> list[tuple[int, int]]:
    """[start, end) of each document's own tokens in a sample ``[CLS] d1 eos [CLS] d2 eos ...``.

    ``[CLS]`` at a document start and the ``eos`` after it are excluded; empty documents are dropped.
    """
    eos = np.flatnonzero(tokens == eos_id)
    begins = np.concatenate([[0], eos + 1])
    finishes = np.concatenate([eos, [len(tokens)]])
    out = []
    for b, e in zip(begins.tolist(), finishes.tolist(), strict=True):
        if b < e and tokens[b] == cls_id:
            b += 1
        if b < e:
            out.append((b, e))
    return out


class BlankInfillingCollator:
    """Collate ``BlockDataset`` samples into a blank-infilling batch (see the module docstring).

    Args:
        config: objective mixture and span settings.
        ids: token ids: ``cls eos mask smask gmask sop eop`` (``from_tokenizer`` reads them from a GLMTokenizer);
            ``dblock_id`` is required when ``config.block_mask_prob > 0`` or ``config.context_mask_ratio > 0``.
        sentence_end: ``tokens -> bool [n]`` (``sentence_end.SentenceEnds``).
    """

    def __init__(self, config: BlankInfillingConfig, *, cls_id: int, eos_id: int, mask_id: int, smask_id: int,
                 gmask_id: int, sop_id: int, eop_id: int, sentence_end: Callable[[np.ndarray], np.ndarray],
                 dblock_id: int | None = None):
        for name in ("block_mask_prob", "context_mask_ratio"):
            if getattr(config, name) > 0 and dblock_id is None:
                raise ValueError(f"{name} = {getattr(config, name)} needs the [dBLOCK] token id: build the "
                                 "tokenizer with GLMTokenizer(path, add_dblock=True) and pass dblock_id")
        self.config = config
        self.cls_id, self.eos_id, self.dblock_id = cls_id, eos_id, dblock_id
        self.mask_id, self.smask_id, self.gmask_id = mask_id, smask_id, gmask_id
        self.sop_id, self.eop_id = sop_id, eop_id
        self.sentence_end = sentence_end
        self.span_probs = poisson_span_probs(config.avg_block_length, config.max_block_length)
        self._span_cdf = np.cumsum(self.span_probs)
        self._span_cdf[-1] = 1.0
        self._mean_span = float((np.arange(1, config.max_block_length) * self.span_probs).sum())

    @classmethod
    def from_tokenizer(cls, config: BlankInfillingConfig, tokenizer, sentence_end=None) -> BlankInfillingCollator:
        if sentence_end is None:
            from data_utils.sentence_end import SentenceEnds

            sentence_end = SentenceEnds(tokenizer)
        try:
            dblock_id = tokenizer.get_command("dBLOCK").id
        except ValueError:  # built without add_dblock
            dblock_id = None
        return cls(config, cls_id=tokenizer.cls_id, eos_id=tokenizer.eos_id, mask_id=tokenizer.mask_id,
                   smask_id=tokenizer.smask_id, gmask_id=tokenizer.gmask_id, sop_id=tokenizer.sop_id,
                   eop_id=tokenizer.eop_id, sentence_end=sentence_end, dblock_id=dblock_id)

    # ------------------------------------------------------------------------------ public API
    def __call__(self, samples: Sequence[dict], rng: np.random.Generator | int, mode: str | None = None) -> dict:
        """Samples -> batch of torch tensors (``mode`` forces the objective; default: drawn from ``rng``)."""
        import torch

        b = self.collate_numpy(samples, rng, mode)
        out = {k: torch.from_numpy(v) for k, v in b.items() if k != "mode"}
        out["mode"] = b["mode"]
        return out

    def collate_numpy(self, samples: Sequence[dict], rng: np.random.Generator | int, mode: str | None = None) -> dict:
        """Samples -> numpy batch. Draw order: short-seq split, single span, objective, then per sample.

        ``mode`` forces the objective; a forced ``bert`` still honours ``single_span_prob``.
        """
        if not isinstance(rng, np.random.Generator):
            rng = np.random.default_rng(rng)
        if not samples:
            raise ValueError("empty batch")
        if mode is not None and mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        cfg = self.config
        # Each option draws only when it is on, so a config without them gives the same stream as before.
        if cfg.short_seq_prob > 0 and rng.random() < cfg.short_seq_prob:
            samples = self.split_samples(samples, rng)
        single_span = False
        if cfg.single_span_prob > 0 and mode in (None, "bert") and rng.random() < cfg.single_span_prob:
            single_span, mode = True, "bert"
        if mode is None:
            r = rng.random()
            mode = "bert" if r < cfg.bert_prob else "sentence" if r < cfg.bert_prob + cfg.gap_sentence_prob else "gpt"
        texts = [np.asarray(s["text"], dtype=np.int64) for s in samples]
        if mode == "bert":
            outs = [self.bert_sample(t, rng, single_span) for t in texts]
        elif mode == "sentence":
            outs = [self.sentence_sample(t, rng) for t in texts]
        else:
            lens = [len(t) for t in texts]
            hi = max(max(lens) - 2, 1)
            lo = min(int(cfg.gpt_min_ratio * min(lens)), hi)
            max_gen = int(rng.integers(lo, hi + 1))
            outs = [self.gpt_sample(t, np.asarray(s["loss_mask"], dtype=np.int64), max_gen, rng)
                    for t, s in zip(texts, samples, strict=True)]
        return self.pad(outs, mode)

    def pad(self, outs: list[dict], mode: str) -> dict:
        length = max(len(o["text"]) for o in outs)
        m = self.config.pad_to_multiple
        if m:
            length = -(-length // m) * m
        bsz = len(outs)
        text = np.zeros((bsz, length), dtype=np.int64)
        target = np.zeros((bsz, length), dtype=np.int64)
        loss = np.zeros((bsz, length), dtype=np.int64)
        pos = np.zeros((bsz, 2, length), dtype=np.int64)
        sep = np.zeros(bsz, dtype=np.int64)
        for i, o in enumerate(outs):
            n = len(o["text"])
            text[i, :n] = o["text"]
            target[i, :n] = o["target"]
            loss[i, :n] = o["loss_mask"]
            pos[i, :, :n] = o["position_id"]
            sep[i] = o["sep"]
        return {"text": text, "target": target, "loss_mask": loss, "position_id": pos, "sep": sep,
                "mode": mode}

    # ------------------------------------------------------------------------------ short sequences
    def split_samples(self, samples: Sequence[dict], rng: np.random.Generator) -> list[dict]:
        """GLM's ``split_samples``: every sample -> ``(seq_length - 1) // target_length`` random pieces, each a
        contiguous slice of the sample after its leading ``[CLS]``, snapped to sentence boundaries (module
        docstring) and re-prefixed with ``[CLS]`` (loss mask 0). Samples are visited in order, pieces of one
        sample are consecutive rows."""
        seq_len = self.config.seq_length or max(len(s["text"]) for s in samples)
        lo, hi = short_seq_target_range(seq_len)
        target = int(rng.integers(lo, hi))
        pieces = max(1, (seq_len - 1) // target)
        out = []
        for sample in samples:
            text = np.asarray(sample["text"], dtype=np.int64)
            loss = np.asarray(sample["loss_mask"], dtype=np.int64)
            skip = 1 if len(text) and text[0] == self.cls_id else 0
            body, body_loss = text[skip:], loss[skip:]
            n = len(body)
            is_eos, is_cls = body == self.eos_id, body == self.cls_id
            sent_end = np.asarray(self.sentence_end(body), dtype=bool)
            # A piece may start after a sentence end / eos / [CLS] (never on eos or [CLS]) and end after a
            # sentence end or eos. Position 0 is always a start (GLM's walk stops there).
            start_ok = np.concatenate([[True], (sent_end | is_eos | is_cls)[:-1]]) & ~is_eos & ~is_cls
            start_ok[:1] = True
            starts = np.flatnonzero(start_ok)
            ends = np.flatnonzero(sent_end | is_eos) + 1  # exclusive piece ends at a boundary
            for _ in range(pieces):
                if target >= n:
                    b, e = 0, n
                else:
                    r = int(rng.integers(0, n - target))
                    b = int(starts[np.searchsorted(starts, r, side="right") - 1])
                    j = int(np.searchsorted(ends, b + target, side="right")) - 1  # last boundary <= b + target
                    e = int(ends[j]) if j >= 0 and ends[j] > b else b
                    if e - b < target // 2:
                        e = b + target
                out.append({"text": np.concatenate([[self.cls_id], body[b:e]]),
                            "loss_mask": np.concatenate([[0], body_loss[b:e]])})
        return out

    # ------------------------------------------------------------------------------ objectives
    def block_data(self, tokens: np.ndarray, spans, mask_id: int, rng: np.random.Generator,
                   block_mask: bool = False) -> dict:
        """Part A / Part B for ``spans``; ``block_mask`` (bert mode): replace Part-B input span tokens by [dBLOCK]
        with probability ``block_mask_prob`` (one uniform draw per span token, in Part-B order), then Part-A
        context tokens by ``context_mask_ratio`` (one draw without replacement among the candidates)."""
        k = len(spans)
        order = rng.permutation(k) if self.config.shuffle_blocks else None
        input_mask = None
        p = self.config.block_mask_prob
        if block_mask and p > 0 and k:
            n_span_tokens = sum(e - s for s, e in spans)
            input_mask = rng.random(n_span_tokens) < p
        out = make_block_data(tokens, spans, mask_id, self.sop_id, self.eop_id, order,
                              self.config.block_position_encoding, input_mask, self.dblock_id)
        ratio = self.config.context_mask_ratio
        if block_mask and ratio > 0 and k:
            sep = out["sep"]
            cand = np.flatnonzero(context_mask_candidates(out["text"][:sep], mask_id, self.config.context_mask_range,
                                                          (self.cls_id, self.eos_id)))
            count = min(int(ratio * len(tokens)), len(cand))
            if count:
                out["text"][rng.choice(cand, size=count, replace=False)] = self.dblock_id
        return out

    def span_lengths(self, target: int, rng: np.random.Generator) -> np.ndarray:
        """Poisson span lengths drawn until their sum reaches ``target`` (GLM draws at least until >= target)."""
        if target <= 0:
            return np.zeros(0, dtype=np.int64)
        chunks, total = [], 0
        while total < target:
            size = int((target - total) / self._mean_span) + 8
            draw = np.searchsorted(self._span_cdf, rng.random(size), side="right") + 1
            chunks.append(draw)
            total += int(draw.sum())
        lengths = np.concatenate(chunks)
        stop = int(np.searchsorted(np.cumsum(lengths), target, side="left")) + 1
        return lengths[:stop]

    def bert_sample(self, tokens: np.ndarray, rng: np.random.Generator, single_span: bool = False) -> dict:
        """Token spans: Poisson lengths covering ``bert_ratio`` of the sample, or one Poisson length."""
        n = len(tokens)
        if single_span:
            lengths = np.searchsorted(self._span_cdf, rng.random(1), side="right") + 1
        else:
            lengths = self.span_lengths(max(int(self.config.bert_ratio * n), 1), rng)
        spans = self.place_spans(tokens, lengths, rng)
        return self.block_data(tokens, spans, self.mask_id, rng, block_mask=True)

    def place_spans(self, tokens: np.ndarray, lengths: np.ndarray, rng: np.random.Generator) -> list[tuple[int, int]]:
        """GLM's ``sample_span_in_document``: shuffled lengths, given to documents shortest first; each but the
        longest takes lengths while they fit in ``bert_ratio`` of it, the longest takes what still fits (with one
        unmasked token between spans). Spans that fit nowhere are dropped (GLM drops the whole sample)."""
        lengths = rng.permutation(lengths)
        docs = document_ranges(tokens, self.cls_id, self.eos_id)
        docs.sort(key=lambda d: d[1] - d[0])
        spans: list[tuple[int, int]] = []
        used = 0
        for j, (b, e) in enumerate(docs):
            doc_len = e - b
            rest = lengths[used:]
            if len(rest) == 0:
                break
            csum = np.cumsum(rest)
            if j == len(docs) - 1:
                count = int(np.sum(csum + np.arange(len(rest)) <= doc_len))  # sum + gaps fit
            else:
                count = int(np.sum(csum <= int(doc_len * self.config.bert_ratio)))
            if count:
                spans.extend(self.sample_spans(rest[:count], b, doc_len, rng))
                used += count
        spans.sort()
        return spans

    @staticmethod
    def sample_spans(lengths: np.ndarray, offset: int, doc_len: int, rng: np.random.Generator):
        """Place spans of ``lengths`` (in this order) uniformly in ``[offset, offset + doc_len)``, >= 1 token apart."""
        c = len(lengths)
        free = doc_len - int(lengths.sum()) - (c - 1)  # slack once every span and gap is laid out
        assert free >= 0
        places = np.sort(rng.integers(0, free + 1, size=c))
        starts = offset + places + np.concatenate([[0], np.cumsum(lengths + 1)[:-1]])
        return list(zip(starts.tolist(), (starts + lengths).tolist(), strict=True))

    def sentence_spans(self, tokens: np.ndarray) -> np.ndarray:
        """[k, 2] maximal runs ending at a sentence end; eos and [CLS] break runs and are never inside."""
        ends = self.sentence_end(tokens)
        breaks = ends | (tokens == self.eos_id) | (tokens == self.cls_id)
        ends &= ~((tokens == self.eos_id) | (tokens == self.cls_id))
        brk = np.flatnonzero(breaks)
        e = np.flatnonzero(ends)
        if len(e) == 0:
            return np.zeros((0, 2), dtype=np.int64)
        p = np.searchsorted(brk, e)  # brk[p] == e (every end is a break)
        prev = np.where(p > 0, brk[np.maximum(p - 1, 0)], -1)
        return np.stack([prev + 1, e + 1], axis=1)

    def sentence_sample(self, tokens: np.ndarray, rng: np.random.Generator) -> dict:
        cand = self.sentence_spans(tokens)
        cand = cand[rng.permutation(len(cand))]
        target = int(self.config.gap_sentence_ratio * len(tokens))
        cum = np.cumsum(cand[:, 1] - cand[:, 0])
        take = int(np.searchsorted(cum, target, side="left")) + 1  # first prefix reaching the target
        chosen = cand[: min(take, len(cand))]
        chosen = chosen[np.argsort(chosen[:, 0])]
        return self.block_data(tokens, [tuple(x) for x in chosen.tolist()], self.smask_id, rng)

    def gpt_sample(self, tokens: np.ndarray, loss_mask: np.ndarray, max_gen: int, rng: np.random.Generator) -> dict:
        n = len(tokens)
        gen = min(max_gen, n - 2)
        if gen < 1:
            return make_block_data(tokens, [], self.gmask_id, self.sop_id, self.eop_id)
        eos = np.flatnonzero(tokens == self.eos_id)
        multiple_doc = len(eos) > 0 and not (len(eos) == 1 and eos[0] == n - 1)
        if not multiple_doc and rng.random() < self.config.gpt_infill_prob:
            (b, e), = document_ranges(tokens, self.cls_id, self.eos_id)
            g = min(gen, e - b)
            start = b + int(rng.integers(0, e - b - g + 1))
            return self.block_data(tokens, [(start, start + g)], self.gmask_id, rng)
        div = n - gen
        src, tgt = tokens[:div], tokens[div:]
        text = np.concatenate([src, [self.gmask_id, self.sop_id], tgt[:-1]])
        target = np.concatenate([src, [self.gmask_id], tgt])
        loss = np.concatenate([np.zeros(div + 1, dtype=np.int64), loss_mask[div:]])
        pos = np.arange(n + 1, dtype=np.int64)
        pos[div + 1 :] = div
        if self.config.block_position_encoding:
            block = np.concatenate([np.zeros(div, dtype=np.int64), np.arange(gen + 1, dtype=np.int64)])
        else:
            block = np.concatenate([np.zeros(div, dtype=np.int64), np.ones(gen + 1, dtype=np.int64)])
        return {"text": text, "target": target, "loss_mask": loss, "position_id": np.stack([pos, block]),
                "sep": div + 1}
