"""Language sampling by temperature, length-weighted documents, and BlockDataset cutting / packing."""

from __future__ import annotations

import numpy as np
import pytest

from data_utils.datasets import BlockDataset, BlockDatasetConfig, format_language_table, language_weights

CLS, EOS = 1002, 1000
END = 5


class MemStore:
    """In-memory stand-in for corpus.TokenStore (num_tokens, offsets, tokens)."""

    def __init__(self, docs):
        self.tokens = np.concatenate(docs).astype(np.int32)
        self.offsets = np.concatenate([[0], np.cumsum([len(d) for d in docs])]).astype(np.int64)

    @property
    def num_tokens(self):
        return int(self.offsets[-1])


def ends(tokens):
    return tokens == END


def test_language_weights_formula():
    counts = {"en": 1_000_000, "de": 100_000, "sw": 1_000, "xx": 0}
    w = language_weights(counts, 0.3)
    q = {"en": 1e6 ** 0.3, "de": 1e5 ** 0.3, "sw": 1e3 ** 0.3}
    z = sum(q.values())
    for k in q:
        assert w[k] == pytest.approx(q[k] / z, rel=1e-12)
    assert w["xx"] == 0
    assert language_weights({"a": 3, "b": 1}, 1.0) == pytest.approx({"a": 0.75, "b": 0.25})
    table = format_language_table(counts, w)
    rows = {r.split()[0]: r.split()[1:] for r in table.splitlines()[1:]}
    assert list(rows) == ["en", "de", "sw", "xx"]  # by size
    total = sum(counts.values())
    for lang in ("en", "de", "sw"):
        tokens, share, weight, ratio = rows[lang]
        assert int(tokens.replace(",", "")) == counts[lang]
        assert float(share) == pytest.approx(counts[lang] / total, abs=5e-5)
        assert float(weight) == pytest.approx(q[lang] / z, abs=5e-5)
        assert float(ratio) == pytest.approx((q[lang] / z) / (counts[lang] / total), rel=1e-3, abs=5e-3)
    assert rows["xx"][2] == "0.0000"
    with pytest.raises(ValueError):
        language_weights({"a": 0}, 0.3)
    with pytest.raises(ValueError):
        language_weights({"a": 1}, 0.0)


def test_empirical_language_shares_100k():
    sizes = {"en": 50_000, "fr": 5_000, "th": 500, "am": 50}
    stores = {lang: MemStore([np.full(n, 7 + i)]) for i, (lang, n) in enumerate(sizes.items())}
    ds = BlockDataset(stores, BlockDatasetConfig(seq_length=64), CLS, EOS, ends)
    rng = np.random.default_rng(0)
    draws = np.array([ds.sample_language(rng) for _ in range(100_000)])
    z = sum(n ** 0.3 for n in sizes.values())
    for i, lang in enumerate(ds.languages):
        expected = sizes[lang] ** 0.3 / z
        assert abs((draws == i).mean() - expected) < 0.01, (lang, (draws == i).mean(), expected)
    # and the samples themselves: language i's documents are made of token 7 + i
    langs = list(sizes)
    seen = np.zeros(len(langs))
    for idx in range(3000):
        t = ds[idx]["text"]
        seen[int(t[1]) - 7] += 1
    for i, lang in enumerate(langs):
        assert abs(seen[i] / 3000 - sizes[lang] ** 0.3 / z) < 0.03


def test_length_weighted_documents():
    docs = [np.full(n, 10 + i) for i, n in enumerate([1, 2, 7])]
    ds = BlockDataset({"x": MemStore(docs)}, BlockDatasetConfig(seq_length=64), CLS, EOS, ends)
    rng = np.random.default_rng(1)
    got = np.array([ds.sample_document(0, rng)[0] - 10 for _ in range(50_000)])
    for i, n in enumerate([1, 2, 7]):
        assert abs((got == i).mean() - n / 10) < 0.01
    d = ds.sample_document(0, rng)
    assert d[-1] == EOS and d.dtype == np.int64


def long_doc(rng, n, period=20):
    d = rng.integers(10, 900, size=n)
    d[period - 1 :: period] = END  # a sentence every `period` tokens
    return d


def test_long_documents_are_cut_at_sentence_boundaries():
    rng = np.random.default_rng(2)
    docs = [long_doc(rng, 3000), long_doc(rng, 1500)]
    ds = BlockDataset({"x": MemStore(docs)}, BlockDatasetConfig(seq_length=128, seed=9), CLS, EOS, ends)
    joined = [np.concatenate([d, [EOS]]) for d in docs]
    for idx in range(300):
        s = ds[idx]
        t, m = s["text"], s["loss_mask"]
        assert t[0] == CLS and m[0] == 0 and (m[1:] == 1).all() and len(t) <= 128
        body = t[1:]
        # a contiguous piece of one document, starting right after a sentence end, ending at one
        src = next(d for d in joined if len(d) > 1 and _find(d, body) is not None)
        start = _find(src, body)
        assert start == 0 or src[start - 1] == END
        assert body[-1] in (END, EOS)
        assert len(t) >= 64  # never cut to less than half
        again = ds[idx]
        assert np.array_equal(again["text"], t)  # pure function of (seed, idx)
    other = BlockDataset({"x": MemStore(docs)}, BlockDatasetConfig(seq_length=128, seed=10), CLS, EOS, ends)
    assert any(not np.array_equal(other[i]["text"], ds[i]["text"]) for i in range(10))


def _find(hay, needle):
    n = len(needle)
    hits = np.flatnonzero(hay[: len(hay) - n + 1] == needle[0])
    for h in hits:
        if np.array_equal(hay[h : h + n], needle):
            return int(h)
    return None


def test_short_documents_are_packed():
    rng = np.random.default_rng(3)
    docs = [long_doc(rng, int(rng.integers(5, 40)), period=7) for _ in range(50)]
    ds = BlockDataset({"x": MemStore(docs)}, BlockDatasetConfig(seq_length=100), CLS, EOS, ends)
    doc_set = {tuple(d.tolist()) for d in docs}
    for idx in range(200):
        s = ds[idx]
        t = s["text"]
        assert len(t) <= 100 and len(t) >= 99 - 40
        assert t[0] == CLS and (s["loss_mask"] == (t != CLS)).all()
        cls_at = np.flatnonzero(t == CLS)
        pieces = np.split(t, cls_at[1:])
        assert len(pieces) >= 2
        for k, p in enumerate(pieces):
            assert p[0] == CLS
            if k < len(pieces) - 1:  # every complete document is followed by eos
                assert p[-1] == EOS and tuple(p[1:-1].tolist()) in doc_set
    one = BlockDataset({"x": MemStore(docs)}, BlockDatasetConfig(seq_length=100, sample_one_document=True),
                       CLS, EOS, ends)
    t = one[0]["text"]
    assert t[0] == CLS and t[-1] == EOS and (t == CLS).sum() == 1
