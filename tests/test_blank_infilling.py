"""Blank-infilling collator: a hand-worked example (GLM paper, Fig. 2), gpt suffix layout, and invariants
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
        for k in ("text", "target", "loss_mask", "position_id", "sep"):
            assert np.array_equal(batch[k], again[k])
        L = batch["text"].shape[1]
        assert batch["position_id"].shape == (len(samples), 2, L)
        for i, s in enumerate(samples):
            orig = s["text"]
            sep = int(batch["sep"][i])
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
    assert set(b) == {"text", "target", "loss_mask", "position_id", "sep", "mode"}
    for k in ("text", "target", "loss_mask", "position_id", "sep"):
        assert b[k].dtype == torch.long
    assert b["position_id"].shape[:2] == (3, 2) and b["sep"].shape == (3,)


# ------------------------------------------------------------------ block_mask / short_seq / single_span
DBLOCK = 110


def make_full_collator(dblock_id=DBLOCK, **kw):
    return BlankInfillingCollator(BlankInfillingConfig(**kw), cls_id=CLS, eos_id=EOS, mask_id=MASK, smask_id=SMASK,
                                  gmask_id=GMASK, sop_id=SOP, eop_id=EOP, sentence_end=sentence_end,
                                  dblock_id=dblock_id)


def test_block_mask_worked_example():
    # The reference example with Part-B order (x6), (x3 x4) and the draws "replace, keep, replace" in that order.
    x = {i: 10 + i for i in range(1, 7)}
    tokens = np.array([CLS, x[1], x[2], x[3], x[4], x[5], x[6]])
    out = make_block_data(tokens, [(3, 5), (6, 7)], MASK, SOP, EOP, order=[1, 0],
                          input_mask=np.array([True, False, True]), input_mask_id=DBLOCK)
    assert out["text"].tolist() == [CLS, x[1], x[2], MASK, x[5], MASK, SOP, DBLOCK, SOP, x[3], DBLOCK]
    assert out["target"].tolist() == [CLS, x[1], x[2], MASK, x[5], MASK, x[6], EOP, x[3], x[4], EOP]
    assert out["position_id"][0].tolist() == [0, 1, 2, 3, 4, 5, 5, 5, 3, 3, 3]
    assert out["position_id"][1].tolist() == [0, 0, 0, 0, 0, 0, 1, 2, 1, 2, 3]


def test_block_mask_prob_one_replaces_every_span_input_only():
    on = make_full_collator(block_mask_prob=1.0)
    off = make_full_collator(block_mask_prob=0.0)
    rng = np.random.default_rng(3)
    n_spans = 0
    for it in range(60):
        s = random_sample(rng)
        # One sample per batch: the [dBLOCK] draws come after every other draw of the sample, so the same
        # generator gives the same spans and order with the option on or off.
        a = on.collate_numpy([s], np.random.default_rng([5, it]), mode="bert")
        b = off.collate_numpy([s], np.random.default_rng([5, it]), mode="bert")
        sep = int(a["sep"][0])
        assert sep == int(b["sep"][0])
        for k in ("target", "loss_mask", "position_id"):
            assert np.array_equal(a[k], b[k]), k
        ta, tb = a["text"][0], b["text"][0]
        n_valid = int((tb != 0).sum())
        assert np.array_equal(ta[:sep], tb[:sep])  # Part A unchanged
        part_b = tb[sep:n_valid]
        is_sop = part_b == SOP
        assert (ta[sep:n_valid][is_sop] == SOP).all()
        assert (ta[sep:n_valid][~is_sop] == DBLOCK).all()  # every span input token replaced
        assert not (tb == DBLOCK).any()
        # Targets are the original tokens: the unmasked run decodes back to the document.
        rec, spans = decode_span_sample(tb, b["target"][0], b["loss_mask"][0], b["position_id"][0], sep, n_valid, MASK)
        assert np.array_equal(rec, s["text"])
        n_spans += len(spans)
    assert n_spans > 200


@pytest.mark.parametrize("mode", ["sentence", "gpt"])
@pytest.mark.parametrize("option, seed", [("block_mask_prob", 8), ("context_mask_ratio", 19)])
def test_dblock_options_only_in_bert_mode(mode, option, seed):
    """[dBLOCK] replacements (of Part-B span inputs, of context tokens) happen in bert mode only."""
    col = make_full_collator(**{option: 1.0})
    rng = np.random.default_rng(seed)
    for it in range(30):
        b = col.collate_numpy([random_sample(rng) for _ in range(3)], np.random.default_rng(it), mode=mode)
        assert not (b["text"] == DBLOCK).any()


def test_block_mask_fraction_is_binomial():
    p = 0.3
    col = make_full_collator(block_mask_prob=p)
    rng = np.random.default_rng(11)
    replaced = total = 0
    for it in range(150):
        b = col.collate_numpy([random_sample(rng) for _ in range(4)], np.random.default_rng([9, it]), mode="bert")
        for i in range(len(b["text"])):
            sep = int(b["sep"][i])
            part_b = b["text"][i, sep:][b["loss_mask"][i, sep:] == 1]
            span_inputs = part_b[part_b != SOP]
            replaced += int((span_inputs == DBLOCK).sum())
            total += len(span_inputs)
            assert not (b["target"][i] == DBLOCK).any()
    assert total > 5000
    sd = (p * (1 - p) / total) ** 0.5
    assert abs(replaced / total - p) < 4 * sd, (replaced / total, total)


def test_options_off_leave_the_stream_unchanged():
    """All three options at 0 (and a [dBLOCK] id given) draw nothing extra: the digest below was produced by the
    collator of main c659e4e, before these options existed, on the same samples and generators."""
    import hashlib

    col = make_full_collator(block_mask_prob=0.0, short_seq_prob=0.0, single_span_prob=0.0)
    data_rng = np.random.default_rng(2024)
    h = hashlib.sha256()
    for it in range(40):
        samples = [random_sample(data_rng) for _ in range(4)]
        b = col.collate_numpy(samples, np.random.default_rng([11, it]))
        h.update(b["mode"].encode())
        for k in ("text", "target", "loss_mask", "position_id", "sep"):
            h.update(np.ascontiguousarray(b[k], dtype=np.int64).tobytes())
    assert h.hexdigest() == "3f3399e8b23f1c3c91273e6aa11b78aa871db01008655a3ef2d6c82925f650a3"


def test_block_mask_needs_a_dblock_id(sample_tokenizer):
    with pytest.raises(ValueError, match="add_dblock=True"):
        make_full_collator(dblock_id=None, block_mask_prob=0.1)
    with pytest.raises(ValueError, match="add_dblock=True"):
        BlankInfillingCollator.from_tokenizer(BlankInfillingConfig(block_mask_prob=0.1), sample_tokenizer)
    from data_utils.tokenizer import GLMTokenizer

    tok = GLMTokenizer(sample_tokenizer.model_path, add_dblock=True)
    col = BlankInfillingCollator.from_tokenizer(BlankInfillingConfig(block_mask_prob=0.1), tok)
    assert col.dblock_id == tok.num_text_tokens + 10 == len(tok) - 1


class ScriptedRng:
    """Returns the given integers in order (a hand-worked split needs known draws)."""

    def __init__(self, ints):
        self.ints = list(ints)

    def integers(self, lo, hi=None):
        v = self.ints.pop(0)
        assert lo <= v < hi, (lo, v, hi)
        return v


def test_short_seq_target_range():
    from data_utils.blank_infilling import short_seq_target_range

    assert short_seq_target_range(512) == (32, 511)  # GLM's randrange(32, seq_len - 1)
    assert short_seq_target_range(129) == (32, 128)
    assert short_seq_target_range(128) == (31, 127)  # shorter sequences: a quarter of the sequence
    assert short_seq_target_range(64) == (15, 63)
    assert short_seq_target_range(21) == (5, 20)
    assert short_seq_target_range(4) == (1, 3)
    assert short_seq_target_range(3) == (1, 2)


def test_split_samples_hand_worked():
    # seq_length 21: target in [5, 20); drawn 10 -> 20 // 10 = 2 pieces per sample.
    col = make_full_collator(short_seq_prob=1.0, seq_length=21)
    body = [11, 12, 13, 5, 14, 15, 16, 17, 18, 19, 20, 21, 5, 22, 23, 24, 25, 26, 27, 28]  # ends at 3 and 12
    s1 = {"text": np.array([CLS] + body), "loss_mask": np.arange(21)}

    # Two documents: [CLS] a b c eos [CLS] d e ... (no sentence ends); 19 body tokens, so r is in [0, 9)
    body2 = [31, 32, 33, EOS, CLS] + list(range(41, 55))
    s2 = {"text": np.array([CLS] + body2), "loss_mask": np.ones(20, dtype=np.int64)}
    # draws: target 10; s1: r = 7, r = 2; s2: r = 4 (on the inner [CLS]), r = 6
    out = col.split_samples([s1, s2], ScriptedRng([10, 7, 2, 4, 6]))
    assert len(out) == 4
    # r=7 -> start 4 (after the end at 3); end 14 -> last boundary 13 (after the end at 12): 9 >= 10 // 2 tokens
    assert out[0]["text"].tolist() == [CLS] + body[4:13]
    assert out[0]["loss_mask"].tolist() == [0] + list(range(5, 14))
    # r=2 -> start 0; end 10 -> last boundary 4 leaves 4 < 5 tokens, so the piece keeps 10 tokens
    assert out[1]["text"].tolist() == [CLS] + body[0:10]
    # r=4 is the inner [CLS], never a start: back to 0; the eos boundary leaves 4 < 5 tokens -> 10 tokens
    assert out[2]["text"].tolist() == [CLS] + body2[0:10]
    # r=6 -> start 5, the first token after the inner [CLS] (which is dropped); no boundary -> 10 tokens
    assert out[3]["text"].tolist() == [CLS] + body2[5:15]
    assert out[3]["loss_mask"].tolist() == [0] + [1] * 10


def test_split_samples_pieces_are_slices_within_target():
    cfg_len = 160
    col = make_full_collator(short_seq_prob=1.0, seq_length=cfg_len)
    from data_utils.blank_infilling import short_seq_target_range

    lo, hi = short_seq_target_range(cfg_len)
    rng = np.random.default_rng(21)
    for it in range(100):
        samples = [random_sample(rng) for _ in range(int(rng.integers(1, 5)))]
        out = col.split_samples(samples, np.random.default_rng(it))
        k = len(out) // len(samples)
        assert len(out) == k * len(samples) and k >= 1
        # targets t with (seq_len - 1) // t == k
        ts = [t for t in range(lo, hi) if (cfg_len - 1) // t == k]
        assert ts, k
        for j, piece in enumerate(out):
            src = samples[j // k]
            body, body_loss = src["text"][1:], src["loss_mask"][1:]
            text, loss = piece["text"], piece["loss_mask"]
            assert text[0] == CLS and loss[0] == 0
            m = len(text) - 1
            if len(body) <= min(ts):
                assert m == len(body)
            assert m <= max(ts) or m == len(body)
            if len(body) > max(ts):
                assert m >= min(ts) // 2
            # contiguous slice of the source (its leading [CLS] removed), loss mask sliced alike
            hits = [b for b in range(len(body) - m + 1) if np.array_equal(body[b:b + m], text[1:])
                    and np.array_equal(body_loss[b:b + m], loss[1:])]
            assert hits, (body, text)


def test_short_seq_batch_grows_and_rows_start_with_cls():
    torch = pytest.importorskip("torch")
    col = make_full_collator(short_seq_prob=1.0, block_mask_prob=0.1, seq_length=161)
    rng = np.random.default_rng(4)
    grew = 0
    for it in range(40):
        samples = [random_sample(rng) for _ in range(3)]
        b = col(samples, np.random.default_rng(it))
        rows = b["text"].shape[0]
        assert rows % 3 == 0 and rows >= 3
        grew += rows > 3
        assert (b["text"][:, 0] == CLS).all()
        assert b["position_id"].shape[:2] == (rows, 2) and b["sep"].shape == (rows,)
        assert b["text"].dtype == torch.long
    assert grew > 10  # t < 80 (k >= 2) is drawn for about half of the batches


def test_single_span_one_span_per_sample():
    col = make_full_collator(single_span_prob=1.0)
    rng = np.random.default_rng(6)
    lengths = []
    for it in range(300):
        texts = [np.concatenate([[CLS], rng.integers(7, V, size=int(rng.integers(60, 200)))]) for _ in range(3)]
        samples = [{"text": t, "loss_mask": np.ones(len(t), dtype=np.int64)} for t in texts]
        b = col.collate_numpy(samples, np.random.default_rng(it))
        assert b["mode"] == "bert"
        for i in range(3):
            sep = int(b["sep"][i])
            assert int((b["text"][i, :sep] == MASK).sum()) == 1
            assert int((b["text"][i, sep:] == SOP).sum()) == 1
            lengths.append(int(b["loss_mask"][i].sum()) - 1)
    # truncated Poisson(3) on 1..39, mean = sum k p(k) / sum p(k) (closed form via math)
    import math

    w = [3.0 ** k / math.factorial(k) for k in range(1, 40)]
    mean = sum(k * x for k, x in zip(range(1, 40), w, strict=True)) / sum(w)
    assert abs(np.mean(lengths) - mean) < 0.15, (np.mean(lengths), mean)
    assert min(lengths) >= 1 and max(lengths) <= 39


def test_single_span_not_applied_to_a_forced_other_mode():
    col = make_full_collator(single_span_prob=1.0)
    b = col.collate_numpy([random_sample(np.random.default_rng(1))], np.random.default_rng(0), mode="gpt")
    assert b["mode"] == "gpt"


def test_all_options_deterministic_for_a_seed():
    col = make_full_collator(block_mask_prob=0.1, short_seq_prob=0.5, single_span_prob=0.3, seq_length=161)
    rng = np.random.default_rng(30)
    differ = 0
    for it in range(40):
        samples = [random_sample(rng) for _ in range(3)]
        a = col.collate_numpy(samples, np.random.default_rng([1, it]))
        b = col.collate_numpy(samples, np.random.default_rng([1, it]))
        c = col.collate_numpy(samples, np.random.default_rng([2, it]))
        assert a["mode"] == b["mode"]
        for k in ("text", "target", "loss_mask", "position_id", "sep"):
            assert np.array_equal(a[k], b[k])
        differ += a["text"].shape != c["text"].shape or not np.array_equal(a["text"], c["text"])
    assert differ > 30


# ------------------------------------------------------------------ context_mask_ratio
def near_mask_reference(part_a, mask_id, window):
    """Independent loop: indices of non-mask, non-[CLS]/eos Part-A tokens within `window` of a mask token."""
    masks = [i for i, t in enumerate(part_a) if t == mask_id]
    return {i for i, t in enumerate(part_a)
            if t not in (mask_id, CLS, EOS) and any(1 <= abs(i - m) <= window for m in masks)}


def test_context_mask_candidates_hand_worked():
    from data_utils.blank_infilling import context_mask_candidates

    x = {i: 10 + i for i in range(1, 10)}
    # The reference example: Part A = [CLS] x1 x2 [M] x5 [M]; within 3 of a mask: x1 x2 x5 ([CLS] excluded;
    # GLM would also take [CLS] here).
    a = np.array([CLS, x[1], x[2], MASK, x[5], MASK])
    assert np.flatnonzero(context_mask_candidates(a, MASK, 3, (CLS, EOS))).tolist() == [1, 2, 4]
    # Window 1 on [CLS] x1 x2 [M] x4 x5 x6 x7 eos: only the neighbours of the mask (GLM would also take the
    # text's last token, which borders no span).
    a = np.array([CLS, x[1], x[2], MASK, x[4], x[5], x[6], x[7], EOS])
    assert np.flatnonzero(context_mask_candidates(a, MASK, 1, (CLS, EOS))).tolist() == [2, 4]
    assert np.flatnonzero(context_mask_candidates(a, MASK, 2, (CLS, EOS))).tolist() == [1, 2, 4, 5]
    assert not context_mask_candidates(np.array([CLS, x[1], x[2]]), MASK, 3, (CLS, EOS)).any()


def test_context_mask_ratio_one_replaces_every_candidate_only():
    on = make_full_collator(context_mask_ratio=1.0, context_mask_range=2)
    off = make_full_collator()
    rng = np.random.default_rng(13)
    replaced = 0
    for it in range(80):
        s = random_sample(rng)
        # one sample per batch: the context draws are the sample's last, so spans and order are the same
        a = on.collate_numpy([s], np.random.default_rng([3, it]), mode="bert")
        b = off.collate_numpy([s], np.random.default_rng([3, it]), mode="bert")
        sep = int(b["sep"][0])
        for k in ("target", "loss_mask", "position_id", "sep"):
            assert np.array_equal(a[k], b[k]), k
        ta, tb = a["text"][0], b["text"][0]
        assert np.array_equal(ta[sep:], tb[sep:])  # Part B untouched
        changed = set(np.flatnonzero(ta[:sep] != tb[:sep]).tolist())
        expected = near_mask_reference(tb[:sep].tolist(), MASK, 2)
        assert changed == expected  # int(1.0 * n) >= every candidate: all of them, nothing else
        assert all(ta[i] == DBLOCK for i in changed)
        replaced += len(changed)
    assert replaced > 300


def test_context_mask_ratio_count_and_positions():
    ratio, window = 0.05, 3
    col = make_full_collator(context_mask_ratio=ratio, context_mask_range=window)
    off = make_full_collator()
    rng = np.random.default_rng(17)
    exact = 0
    for it in range(200):
        s = random_sample(rng)
        a = col.collate_numpy([s], np.random.default_rng([4, it]), mode="bert")
        b = off.collate_numpy([s], np.random.default_rng([4, it]), mode="bert")
        sep = int(b["sep"][0])
        part_a = b["text"][0, :sep].tolist()
        cand = near_mask_reference(part_a, MASK, window)
        hit = np.flatnonzero(a["text"][0, :sep] == DBLOCK).tolist()
        assert set(hit) <= cand
        want = min(int(ratio * len(s["text"])), len(cand))
        assert len(hit) == want, (len(hit), want)
        exact += want == int(ratio * len(s["text"])) and want > 0
    assert exact > 100  # mostly the uncapped count


def test_context_mask_needs_a_dblock_id_and_valid_values():
    with pytest.raises(ValueError, match="context_mask_ratio = 0.1 needs the \\[dBLOCK\\]"):
        make_full_collator(dblock_id=None, context_mask_ratio=0.1)
    with pytest.raises(ValueError, match="context_mask_ratio"):
        BlankInfillingConfig(context_mask_ratio=1.5)
    with pytest.raises(ValueError, match="context_mask_range"):
        BlankInfillingConfig(context_mask_range=0)
