"""Blank-infilling collator: the hand-worked example of reference 4.3, gpt suffix layout, and invariants
checked on thousands of random samples by an independent decoder of the batch."""

from __future__ import annotations

import numpy as np
import pytest

from data_utils.blank_infilling import BlankInfillingCollator, BlankInfillingConfig, make_block_data

V = 100  # text ids 0..V-1; command ids above
CLS, EOS, MASK, SMASK, GMASK, SOP, EOP = 102, 100, 103, 108, 109, 106, 107
END_TOKENS = (5, 6)  # ids that end a sentence in these tests


def sentence_end(tokens):
    return np.isin(tokens, END_TOKENS)


def make_collator(**kw):
    return BlankInfillingCollator(BlankInfillingConfig(**kw), cls_id=CLS, eos_id=EOS, mask_id=MASK, smask_id=SMASK,
                                  gmask_id=GMASK, sop_id=SOP, eop_id=EOP, sentence_end=sentence_end)


def test_reference_worked_example():
    # [CLS] x1 x2 x3 x4 x5 x6, spans (x3 x4) and (x6), Part-B order (x6), (x3 x4)
    x = {i: 10 + i for i in range(1, 7)}
    tokens = np.array([CLS, x[1], x[2], x[3], x[4], x[5], x[6]])
    out = make_block_data(tokens, [(3, 5), (6, 7)], MASK, SOP, EOP, order=[1, 0])
    assert out["text"].tolist() == [CLS, x[1], x[2], MASK, x[5], MASK, SOP, x[6], SOP, x[3], x[4]]
    assert out["target"].tolist() == [CLS, x[1], x[2], MASK, x[5], MASK, x[6], EOP, x[3], x[4], EOP]
    assert out["position_id"][0].tolist() == [0, 1, 2, 3, 4, 5, 5, 5, 3, 3, 3]
    assert out["position_id"][1].tolist() == [0, 0, 0, 0, 0, 0, 1, 2, 1, 2, 3]
    assert out["loss_mask"].tolist() == [0] * 6 + [1] * 5
    assert out["sep"] == 6


def test_gpt_suffix_layout():
    col = make_collator(gpt_infill_prob=0.0)
    a, b, c, d = 11, 12, 13, 14
    tokens = np.array([CLS, a, b, c, d, EOS])
    data_loss = np.array([0, 1, 1, 1, 0, 1])
    out = col.gpt_sample(tokens, data_loss, max_gen=3, rng=np.random.default_rng(0))
    assert out["text"].tolist() == [CLS, a, b, GMASK, SOP, c, d]
    assert out["target"].tolist() == [CLS, a, b, GMASK, c, d, EOS]  # no [eop]: ends with the document's eos
    assert out["position_id"][0].tolist() == [0, 1, 2, 3, 3, 3, 3]
    assert out["position_id"][1].tolist() == [0, 0, 0, 0, 1, 2, 3]
    assert out["loss_mask"].tolist() == [0, 0, 0, 0, 1, 0, 1]  # the data's loss mask on the targets
    assert out["sep"] == 4


def random_sample(rng, max_len=160):
    """[CLS] d1 eos [CLS] d2 eos ... ; the last document may be cut (no eos)."""
    n_docs = int(rng.integers(1, 4))
    parts = []
    for _ in range(n_docs):
        doc = rng.integers(7, V, size=int(rng.integers(3, 90)))
        doc[rng.random(len(doc)) < 0.08] = rng.choice(END_TOKENS)
        parts += [[CLS], doc.tolist(), [EOS]]
    text = np.array(sum(parts, []), dtype=np.int64)[:max_len]
    if rng.random() < 0.3 and text[-1] == EOS:
        text = text[:-1]
    return {"text": text, "loss_mask": (text != CLS).astype(np.int64)}


def decode_span_sample(text, target, loss, pos, sep, n_valid, mask_id):
    """Independently undo Part A / Part B; returns (reconstructed original, list of (a_index, span tokens))."""
    a, b = text[:sep], text[sep:n_valid]
    assert (loss[:sep] == 0).all() and (loss[sep:n_valid] == 1).all() and (loss[n_valid:] == 0).all()
    assert (text[n_valid:] == 0).all() and (target[n_valid:] == 0).all() and (pos[:, n_valid:] == 0).all()
    assert pos[0, :sep].tolist() == list(range(sep)) and (pos[1, :sep] == 0).all()
    assert (target[:sep] == a).all()
    starts = np.flatnonzero(b == SOP)
    assert len(b) == 0 or starts[0] == 0
    spans = []
    for k, s in enumerate(starts):
        e = starts[k + 1] if k + 1 < len(starts) else len(b)
        seg_in, seg_tgt = b[s:e], target[sep + s : sep + e]
        seg_pos, seg_blk = pos[0, sep + s : sep + e], pos[1, sep + s : sep + e]
        assert seg_in[0] == SOP and seg_tgt[-1] == EOP
        assert (seg_tgt[:-1] == seg_in[1:]).all()
        assert (seg_pos == seg_pos[0]).all() and seg_blk.tolist() == list(range(1, len(seg_in) + 1))
        assert a[seg_pos[0]] == mask_id
        spans.append((int(seg_pos[0]), seg_in[1:]))
    mask_at = np.flatnonzero(a == mask_id)
    assert sorted(p for p, _ in spans) == mask_at.tolist()  # every mask has exactly one span in Part B
    by_pos = dict(spans)
    rec = []
    for i, t in enumerate(a.tolist()):
        rec.extend(by_pos[i].tolist() if t == mask_id else [t])
    return np.array(rec), spans


@pytest.mark.parametrize("mode", ["bert", "sentence", "gpt"])
def test_invariants_on_random_samples(mode):
    col = make_collator(gpt_infill_prob=0.5)
    rng = np.random.default_rng(123)
    masked = total = n_samples = n_suffix = 0
    for it in range(150):
        samples = [random_sample(rng) for _ in range(int(rng.integers(1, 9)))]
        batch = col.collate_numpy(samples, np.random.default_rng([7, it]), mode=mode)
        assert batch["mode"] == mode
        again = col.collate_numpy(samples, np.random.default_rng([7, it]), mode=mode)
        for k in ("text", "target", "loss_mask", "position_id", "attention_mask"):
            assert np.array_equal(batch[k], again[k])
        L = batch["text"].shape[1]
        assert batch["position_id"].shape == (len(samples), 2, L)
        for i, s in enumerate(samples):
            orig = s["text"]
            sep = int(batch["attention_mask"][i])
            text, target, loss, pos = batch["text"][i], batch["target"][i], batch["loss_mask"][i], batch["position_id"][i]
            n_valid = int((text != 0).sum())  # the test's ids are never 0, so only padding is 0
            assert (text[:n_valid] != 0).all()
            is_suffix = mode == "gpt" and not (target[:n_valid] == EOP).any()
            if is_suffix:
                div = sep - 1
                assert text[div] == GMASK and target[div] == GMASK and n_valid == len(orig) + 1
                assert (loss[n_valid:] == 0).all() and (pos[:, n_valid:] == 0).all()
                assert (text[:div] == orig[:div]).all() and (target[sep:n_valid] == orig[div:]).all()
                assert (text[sep + 1 : n_valid] == orig[div:-1]).all()
                assert pos[0, :n_valid].tolist() == list(range(sep)) + [div] * (n_valid - sep)
                assert pos[1, :n_valid].tolist() == [0] * div + list(range(n_valid - div))
                assert (loss[sep:n_valid] == s["loss_mask"][div:]).all() and (loss[:sep] == 0).all()
                n_samples += 1
                n_suffix += 1
                continue
            mask_id = {"bert": MASK, "sentence": SMASK, "gpt": GMASK}[mode]
            rec, spans = decode_span_sample(text, target, loss, pos, sep, n_valid, mask_id)
            assert n_valid == len(orig) + 2 * len(spans)
            assert np.array_equal(rec, orig), "Part A with masks replaced by their spans must give the document"
            for _, span in spans:
                assert not np.isin(span, [CLS, EOS]).any()
            if mode == "sentence":
                for _, span in spans:
                    assert span[-1] in END_TOKENS and not np.isin(span[:-1], END_TOKENS).any()
            if mode == "gpt":
                assert len(spans) == 1
            if mode == "bert":
                assert all(1 <= len(sp) <= 39 for _, sp in spans)
                masked += sum(len(sp) for _, sp in spans)
                total += len(orig)
            n_samples += 1
    assert n_samples > 500
    if mode == "gpt":  # both gpt variants were exercised
        assert 100 < n_suffix < n_samples - 100
    if mode == "bert":
        assert 0.14 <= masked / total <= 0.18, masked / total


def test_mask_fraction_long_samples():
    col = make_collator()
    rng = np.random.default_rng(5)
    masked = total = 0
    for _ in range(200):
        text = np.concatenate([[CLS], rng.integers(7, V, size=511)])
        b = col.collate_numpy([{"text": text, "loss_mask": np.ones(512, dtype=np.int64)}], rng, mode="bert")
        n_spans = int((b["text"][0] == MASK).sum())
        masked += int(b["loss_mask"][0].sum()) - n_spans  # Part B = one [sop] per span + the span tokens
        total += 512
    # int(0.15 * 512) = 76 masked tokens at least, overshoot by less than one span on average
    assert 0.148 <= masked / total <= 0.158, masked / total


def test_mode_mixture_and_padding():
    col = make_collator(bert_prob=0.5, gap_sentence_prob=0.3, pad_to_multiple=64)
    rng = np.random.default_rng(0)
    counts = {"bert": 0, "sentence": 0, "gpt": 0}
    for _ in range(2000):
        b = col.collate_numpy([random_sample(rng, 60)], rng)
        counts[b["mode"]] += 1
        assert b["text"].shape[1] % 64 == 0
    assert abs(counts["bert"] / 2000 - 0.5) < 0.04 and abs(counts["sentence"] / 2000 - 0.3) < 0.04


def test_torch_batch_format():
    torch = pytest.importorskip("torch")
    col = make_collator()
    rng = np.random.default_rng(1)
    b = col([random_sample(rng) for _ in range(3)], rng)
    assert set(b) == {"text", "target", "loss_mask", "position_id", "attention_mask", "mode"}
    for k in ("text", "target", "loss_mask", "position_id", "attention_mask"):
        assert b[k].dtype == torch.long
    assert b["position_id"].shape[:2] == (3, 2) and b["attention_mask"].shape == (3,)
