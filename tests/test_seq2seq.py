"""The generation-task family (tasks/seq2seq.py): training layout and loss against a direct per-sample
computation, label smoothing, and that a model trained on the layout generates its targets."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from model import GLMConfig, GLMModel
from mpu import ParallelState
from tasks.seq2seq import GenerationOptions, GenerationTask


@dataclass(frozen=True)
class Pair:
    uid: str
    lang: str
    source: str
    target: str | None


class Echo(GenerationTask):
    """Toy task: ``[CLS] source [sMASK]`` -> target."""

    name = "echo"

    def source_ids(self, e: Pair) -> list[int]:
        tok = self.tokenizer
        return [tok.cls_id, *tok.encode(e.source), tok.smask_id]

    def target_text(self, e: Pair) -> str | None:
        return e.target

    def gold(self, e: Pair):
        return e.target


def _model(tok, dropout: float = 0.0) -> GLMModel:
    cfg = GLMConfig(num_layers=2, vocab_size=tok.padded_vocab_size(128), hidden_size=64, num_attention_heads=4,
                    max_sequence_length=128, hidden_dropout=dropout, attention_dropout=dropout)
    return GLMModel(cfg, ParallelState.single(), init_seed=3)


PAIRS = [Pair("a", "en", "The cat sat on the mat.", "cat"),
         Pair("b", "en", "Dogs bark at night in the village.", "night in the village"),
         Pair("c", "en", "Snow fell.", None)]


def test_layout_and_loss_match_a_direct_per_sample_computation(sample_tokenizer):
    tok = sample_tokenizer
    task = Echo(tok, 64, options=GenerationOptions(tgt_seq_length=8))
    samples = task.train_samples(PAIRS)
    assert [s["example"] for s in samples] == [0, 1]  # the target-less example has nothing to learn
    assert samples[1]["target"][-1] == tok.eop_id and len(samples[1]["target"]) <= 8
    model = _model(tok).eval()
    batch = task.collate(samples)
    loss = task.loss(model, batch, ParallelState.single())

    # Direct: each sample alone, unpadded, its layout written out by hand.
    total, count = 0.0, 0
    for s in samples:
        src, tgt = s["source"], s["target"]
        n, T = len(src), len(tgt)
        ids = torch.tensor([src + [tok.sop_id] + tgt[:-1]])
        pos = torch.tensor([[list(range(n)) + [s["mask_pos"]] * T, [0] * n + list(range(1, T + 1))]])
        logits, _ = model(ids, pos, torch.tensor([n]))
        total += F.cross_entropy(logits[0, n:n + T].float(), torch.tensor(tgt), reduction="sum").item()
        count += T
    assert loss.item() == pytest.approx(total / count, rel=1e-5)

    smoothed = Echo(tok, 64, options=GenerationOptions(tgt_seq_length=8, label_smoothing=0.2)).loss(
        model, batch, ParallelState.single())
    logits, _ = model(batch["text"], batch["position_id"], batch["sep"])
    m = batch["labels"] >= 0
    ref = F.cross_entropy(logits[m].float(), batch["labels"][m], label_smoothing=0.2)
    assert smoothed.item() == pytest.approx(ref.item(), rel=1e-5)


def test_target_end_token_is_appended_before_the_cut(sample_tokenizer):
    """mGLM's Seq2SeqDataset: ``(encode(" " + t) + [eop])[:tgt_seq_length]``. A target of exactly
    tgt_seq_length - 1 tokens keeps its end token; a longer one is cut to tgt_seq_length tokens of text and
    trains no end token."""
    tok = sample_tokenizer
    words = tok.encode(" night in the village")
    assert len(words) >= 4
    fits = Echo(tok, 64, options=GenerationOptions(tgt_seq_length=len(words) + 1))
    assert fits.encode(PAIRS[1])["target"] == words + [tok.eop_id]
    cut = Echo(tok, 64, options=GenerationOptions(tgt_seq_length=3))
    assert cut.encode(PAIRS[1])["target"] == words[:3]
    batch = cut.collate([cut.encode(PAIRS[1])])
    n = len(cut.source_ids(PAIRS[1]))
    assert batch["text"][0, n:n + 3].tolist() == [tok.sop_id, *words[:2]]
    assert batch["labels"][0, n:n + 3].tolist() == words[:3]


def test_a_source_needs_exactly_one_blank(sample_tokenizer):
    with pytest.raises(AssertionError, match="exactly one"):
        Echo(sample_tokenizer, 64).make_sample([1, 2, 3], "x", 0)


@pytest.mark.slow
def test_trained_model_generates_its_targets(sample_tokenizer):
    """Overfit two pairs; greedy and beam decoding then reproduce the targets (teacher-forced training and
    cached generation agree on the layout)."""
    tok = sample_tokenizer
    torch.manual_seed(0)
    model = _model(tok)
    for opts in (GenerationOptions(tgt_seq_length=8), GenerationOptions(tgt_seq_length=8, num_beams=3, length_penalty=1.0)):
        task = Echo(tok, 64, options=opts)
        batch = task.collate(task.train_samples(PAIRS))
        if opts.num_beams == 1:
            opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
            model.train()
            for _ in range(150):
                opt.zero_grad()
                loss = task.loss(model, batch, ParallelState.single())
                loss.backward()
                opt.step()
            assert loss.item() < 0.05
        eval_batch = task.collate(task.eval_samples(PAIRS[:2]))
        preds = task.predict(model, eval_batch, ParallelState.single())
        assert [p for p, _ in preds] == ["cat", "night in the village"], opts
