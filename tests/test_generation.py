"""Generation: KV-cached decoding equals re-encoding, padding independence, beam search optimality,
multi-blank layout equal to the pretraining collator's, TP=2 equals TP=1."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from conftest import SAMPLE_TOKENIZER
from distributed import run_distributed

from model import GLMConfig, GLMModel
from model.generation import (
    GenerationConfig,
    SpecialTokens,
    blank_layout,
    encode_prompt,
    fill_blanks,
    generate,
)
from model.glm import KVCache

# A 256-id table whose real vocabulary is ids < 250; command ids inside it.
SOP, EOP, MASK, GMASK = 246, 247, 248, 249
SPECIAL = SpecialTokens(sop_id=SOP, end_ids=(EOP,), mask_ids=(MASK, GMASK), pad_id=0, vocab_limit=250)


def tiny_model(vocab: int = 256, seed: int = 7, tp_state=None, std: float = 0.1) -> GLMModel:
    cfg = GLMConfig(num_layers=2, vocab_size=vocab, hidden_size=32, num_attention_heads=4, max_sequence_length=64,
                    hidden_dropout=0.0, attention_dropout=0.0, init_method_std=std)
    return GLMModel(cfg, tp_state, init_seed=seed).eval()


@pytest.fixture(scope="module")
def model() -> GLMModel:
    torch.set_num_threads(1)
    return tiny_model()


def context(n: int, seed: int, mask_at: int | None = None) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 240, (n,), generator=g).tolist()
    ids[n // 2 if mask_at is None else mask_at] = MASK
    return ids


def special_ending(model, ctx) -> SpecialTokens:
    """End ids = EOP plus the token greedy decoding picks 4th: some rows then end mid-way."""
    free = generate(model, SPECIAL, ctx, GenerationConfig(max_new_tokens=6))[0].tokens
    return SpecialTokens(SOP, (EOP, free[3]), SPECIAL.mask_ids, 0, 250)


MODES = {
    "greedy": dict(),
    "sample": dict(do_sample=True, temperature=0.9, top_k=40, top_p=0.95, seed=11, num_return_sequences=2),
    "beam": dict(num_beams=4, length_penalty=1.0, num_return_sequences=3),
    "beam_ngram": dict(num_beams=3, no_repeat_ngram_size=2, min_new_tokens=2, length_penalty=0.5),
}


def assert_same(a, b):
    assert [r.tokens for r in a] == [r.tokens for r in b]
    assert [r.ended for r in a] == [r.ended for r in b]
    np.testing.assert_allclose([r.score for r in a], [r.score for r in b], rtol=0, atol=1e-5)
    np.testing.assert_allclose([r.logprob for r in a], [r.logprob for r in b], rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------ the cache itself
def test_kv_cache_forward_equals_full_forward(model):
    """Context once (sep = n) then 3 single positions through the cache == one full forward with sep = n."""
    ids = torch.tensor([context(9, 1) + [SOP, 5, 6, 7]])  # [1, 13]
    pos = torch.tensor([[list(range(9)) + [4] * 4, [0] * 9 + [1, 2, 3, 4]]])  # [1, 2, 13]
    with torch.no_grad():
        full, _ = model(ids, pos, torch.tensor([9]))
        cache = KVCache(model.config.num_layers, capacity=10)  # forces the buffers to grow once
        first, _ = model(ids[:, :9], pos[:, :, :9], torch.tensor([9]), kv_cache=cache)
        steps = [model(ids[:, i:i + 1], pos[:, :, i:i + 1], torch.tensor([0]), kv_cache=cache)[0]
                 for i in range(9, 13)]
    assert cache.length == 13
    torch.testing.assert_close(first, full[:, :9], rtol=0, atol=1e-5)
    torch.testing.assert_close(torch.cat(steps, dim=1), full[:, 9:], rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------ cached == uncached
@pytest.mark.parametrize("mode", list(MODES))
def test_cached_equals_uncached(model, mode):
    ctx = context(12, 2)
    special = special_ending(model, ctx)
    kw = dict(MODES[mode], max_new_tokens=10)
    cached = generate(model, special, ctx, GenerationConfig(**kw, use_cache=True))
    uncached = generate(model, special, ctx, GenerationConfig(**kw, use_cache=False))
    assert_same(cached, uncached)
    assert len(cached) == kw.get("num_return_sequences", 1)
    if mode.startswith("beam"):
        assert [r.score for r in cached] == sorted((r.score for r in cached), reverse=True)


@pytest.mark.parametrize("mode", list(MODES))
def test_padded_batch_rows_equal_single_runs(model, mode):
    """Contexts of lengths 5, 14, 9 (and blanks at different places) in one padded batch: each row equals
    its own unpadded, uncached single-row run (which uses the model's plain sep mask)."""
    ctxs = [context(5, 3, mask_at=4), context(14, 4, mask_at=2), context(9, 5)]
    special = special_ending(model, ctxs[1])
    kw = dict(MODES[mode], max_new_tokens=8)
    batched = generate(model, special, ctxs, GenerationConfig(**kw, use_cache=True))
    batched_uncached = generate(model, special, ctxs, GenerationConfig(**kw, use_cache=False))
    for b, ctx in enumerate(ctxs):
        single = generate(model, special, ctx, GenerationConfig(**kw, use_cache=False))
        assert_same(batched[b], single)
        assert_same(batched_uncached[b], single)


# ------------------------------------------------------------------------------------ search semantics
def test_beam_one_equals_greedy(model):
    """One beam through the beam-search code (length penalty 0 and 1) is greedy decoding."""
    from model.generation import _beam_search, _CachedDecoder

    for seed in range(3):
        ctx = context(10, 20 + seed)
        special = special_ending(model, ctx)
        greedy = generate(model, special, ctx, GenerationConfig(max_new_tokens=8))[0]
        for lp in (0.0, 1.0):
            dec = _CachedDecoder(model, [blank_layout(ctx, [], SOP)], torch.tensor([ctx.index(MASK)]), 1, 8, SOP)
            with torch.no_grad():
                one = _beam_search(dec, 1, GenerationConfig(max_new_tokens=8, num_beams=1, length_penalty=lp),
                                   special, torch.device("cpu"))[0][0]
            assert one.tokens == greedy.tokens and one.ended == greedy.ended
            assert abs(one.logprob - greedy.logprob) < 1e-5


def test_beam_search_finds_exhaustive_optimum():
    """Tiny vocabulary (16 real ids), 4 new tokens, end id 3: enumerate every continuation with plain full
    forwards; beam search with 15^3 beams and length penalty 0 returns the best log-probability one."""
    torch.manual_seed(0)
    model = tiny_model(vocab=128, seed=3, std=0.3)
    V, T, END, sop = 16, 4, 3, 15
    special = SpecialTokens(sop_id=sop, end_ids=(END,), mask_ids=(14,), vocab_limit=V)
    ctx = [1, 7, 14, 9, 2, 11]
    n, p = len(ctx), 2

    def next_logp(prefixes: list[list[int]]) -> torch.Tensor:
        t = len(prefixes[0])
        ids = torch.tensor([ctx + [sop] + g for g in prefixes])
        pos = torch.tensor([list(range(n)) + [p] * (t + 1), [0] * n + list(range(1, t + 2))])
        with torch.no_grad():
            logits, _ = model(ids, pos.expand(len(prefixes), 2, -1), torch.full((len(prefixes),), n))
        return torch.log_softmax(logits[:, -1, :V].double(), dim=-1)  # [N, V]

    best, best_seq = -float("inf"), None
    live = [([], 0.0)]
    for t in range(T):
        lp = next_logp([g for g, _ in live])
        nxt = []
        for (g, s), row in zip(live, lp.tolist(), strict=True):
            for tok in range(V):
                total = s + row[tok]
                if tok == END or t == T - 1:
                    if total > best:
                        best, best_seq = total, (g if tok == END else g + [tok])
                else:
                    nxt.append((g + [tok], total))
        live = nxt
    cfg = dict(max_new_tokens=T, num_beams=(V - 1) ** (T - 1), length_penalty=0.0)
    result = generate(model, special, ctx, GenerationConfig(**cfg))[0]
    assert result.tokens == best_seq and abs(result.logprob - best) < 1e-5
    greedy = generate(model, special, ctx, GenerationConfig(max_new_tokens=T))[0]
    assert greedy.logprob < best - 1e-3, "choose a model where greedy is not optimal (test would be weak)"


def test_min_length_and_no_repeat_ngram(model):
    ctx = context(10, 6)
    # EOP plus every real id but a few: without the min-length ban every step would end at once
    special = SpecialTokens(SOP, (EOP, *range(1, 230)), SPECIAL.mask_ids, 0, 250)
    for extra in (dict(), dict(num_beams=3)):
        r = generate(model, special, ctx, GenerationConfig(max_new_tokens=8, min_new_tokens=5, **extra))[0]
        assert len(r.tokens) == 5 and r.ended and all(t >= 230 for t in r.tokens)
    for n, extra in itertools.product((1, 2), (dict(), dict(num_beams=3))):
        r = generate(model, SPECIAL, ctx, GenerationConfig(max_new_tokens=12, no_repeat_ngram_size=n, **extra))[0]
        grams = [tuple(r.tokens[i:i + n]) for i in range(len(r.tokens) - n + 1)]
        assert len(grams) == len(set(grams)), r.tokens
    plain = generate(model, SPECIAL, ctx, GenerationConfig(max_new_tokens=12))[0].tokens
    assert len(set(plain)) < len(plain), "the unconstrained output repeats (else the ban test is vacuous)"


def test_sampling_filters_and_seed(model):
    ctx = context(11, 8)
    greedy = generate(model, SPECIAL, ctx, GenerationConfig(max_new_tokens=8))[0].tokens
    for filt in (dict(top_k=1), dict(top_p=1e-9)):
        s = generate(model, SPECIAL, ctx, GenerationConfig(max_new_tokens=8, do_sample=True, **filt))[0]
        assert s.tokens == greedy
    a = generate(model, SPECIAL, ctx, GenerationConfig(max_new_tokens=8, do_sample=True, seed=1, temperature=2.0))
    b = generate(model, SPECIAL, ctx, GenerationConfig(max_new_tokens=8, do_sample=True, seed=1, temperature=2.0))
    c = generate(model, SPECIAL, ctx, GenerationConfig(max_new_tokens=8, do_sample=True, seed=2, temperature=2.0))
    assert a[0].tokens == b[0].tokens and a[0].tokens != c[0].tokens
    k = generate(model, SPECIAL, ctx, GenerationConfig(max_new_tokens=8, do_sample=True, top_k=3, seed=5))[0]
    # every sampled token is among the 3 most likely at its step (checked by re-scoring the prefix)
    for t, tok in enumerate(k.tokens):
        ids = torch.tensor([ctx + [SOP] + k.tokens[:t]])
        pos = torch.tensor([[*range(len(ctx)), *[ctx.index(MASK)] * (t + 1)], [0] * len(ctx) + list(range(1, t + 2))])
        with torch.no_grad():
            logits = model(ids, pos.unsqueeze(0), torch.tensor([len(ctx)]))[0][0, -1, :250]
        assert tok in logits.topk(3).indices.tolist()


# ------------------------------------------------------------------------------------ blank filling
def test_blank_layout_reference_example():
    """Reference 4.3: Part A `[CLS] x1 x2 [M] x5 [M]`; after filling the blank at 5 with (x6), the input for
    the blank at 3 is `... [S] x6 [S]` with positions 5 5 3 and block positions 1 2 1."""
    CLS, x1, x2, x5, x6 = 100, 1, 2, 5, 6
    lay = blank_layout([CLS, x1, x2, MASK, x5, MASK], [(5, [x6])], SOP, next_mask_position=3)
    assert lay.tokens == [CLS, x1, x2, MASK, x5, MASK, SOP, x6, SOP]
    assert lay.positions == [0, 1, 2, 3, 4, 5, 5, 5, 3]
    assert lay.block_positions == [0, 0, 0, 0, 0, 0, 1, 2, 1]
    assert lay.sep == 6


@pytest.fixture(scope="module")
def sample_tok():
    from data_utils.tokenizer import GLMTokenizer

    return GLMTokenizer(SAMPLE_TOKENIZER)


@pytest.fixture(scope="module")
def tok_model(sample_tok):
    cfg = GLMConfig(num_layers=2, vocab_size=sample_tok.padded_vocab_size(), hidden_size=32, num_attention_heads=4,
                    max_sequence_length=96, hidden_dropout=0.0, attention_dropout=0.0, init_method_std=0.1)
    return GLMModel(cfg, init_seed=5).eval()


def test_second_blank_input_is_the_pretraining_layout(tok_model, sample_tok):
    """Record the model input at the first step of blank 2 (uncached: the whole sequence is fed) and compare
    with (a) the hand-built layout and (b) the collator's make_block_data for the same two spans in order."""
    from data_utils.blank_infilling import make_block_data

    calls = []
    hook = tok_model.register_forward_pre_hook(lambda m, args: calls.append([a.clone() for a in args[:3]]))
    try:
        cfg = GenerationConfig(max_new_tokens=3, min_new_tokens=2, use_cache=False)
        res = fill_blanks(tok_model, sample_tok, "The cat [MASK] on the mat. [sMASK] It was warm.", cfg)
    finally:
        hook.remove()
    ids = encode_prompt(sample_tok, "The cat [MASK] on the mat. [sMASK] It was warm.")
    assert res.context_ids == ids and ids[-1] == sample_tok.eos_id
    n = len(ids)
    p1, p2 = res.mask_positions
    assert ids[p1] == sample_tok.mask_id and ids[p2] == sample_tok.smask_id
    s1, s2 = res.spans
    assert 2 <= len(s1) <= 3 and 2 <= len(s2) <= 3
    first_step_blank2 = calls[3]  # blank 1 took 3 calls: 3 tokens, or 2 tokens and the end token
    tokens, pos, sep = first_step_blank2
    sop = sample_tok.sop_id
    # (a) by hand
    assert tokens[0].tolist() == ids + [sop] + s1 + [sop]
    assert pos[0, 0].tolist() == list(range(n)) + [p1] * (len(s1) + 1) + [p2]
    assert pos[0, 1].tolist() == [0] * n + list(range(1, len(s1) + 2)) + [1]
    assert sep.tolist() == [n]
    # (b) the collator, on the original text with both spans in place, Part-B order = by position
    full = ids[:p1] + s1 + ids[p1 + 1:p2] + s2 + ids[p2 + 1:]
    q2 = p2 + len(s1) - 1
    block = make_block_data(np.array(full), [(p1, p1 + len(s1)), (q2, q2 + len(s2))], sample_tok.mask_id,
                            sop, sample_tok.eop_id)
    k = n + len(s1) + 2
    assert block["sep"] == n
    text = block["text"][:k].tolist()
    text[p2] = sample_tok.smask_id  # the collator writes [MASK] for every span in bert mode
    assert text == tokens[0].tolist()
    assert block["position_id"][:, :k].tolist() == pos[0].tolist()
    # the filled text contains both spans in place of the masks
    assert res.text == sample_tok.decode(full[1:-1])
    assert not any(sample_tok.is_command_id(t) for t in s1 + s2)  # command tokens are never generated


@pytest.mark.parametrize("mode", ["greedy", "beam"])
def test_fill_blanks_cached_equals_uncached(tok_model, sample_tok, mode):
    text = "Hello [MASK] world, [MASK] this is [sMASK] a test"
    kw = dict(max_new_tokens=5, **({"num_beams": 3} if mode == "beam" else {}))
    a = fill_blanks(tok_model, sample_tok, text, GenerationConfig(**kw))
    b = fill_blanks(tok_model, sample_tok, text, GenerationConfig(**kw, use_cache=False))
    assert len(a.spans) == 3 and a.spans == b.spans and a.text == b.text
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)


def test_prompt_encoding_rules(sample_tok):
    t = sample_tok
    no_mask = encode_prompt(t, "Once upon a time")
    assert no_mask[0] == t.cls_id and no_mask[-1] == t.gmask_id  # continue the text: [gMASK] appended, no eos
    assert encode_prompt(t, "a [MASK] b")[-1] == t.eos_id
    with pytest.raises(ValueError, match=r"unknown mask token \[XMASK\]"):
        encode_prompt(t, "a [XMASK] b")


# ------------------------------------------------------------------------------------ tensor parallel
def _tp_worker(rank: int, world: int) -> dict:
    from mpu.initialize import ParallelState

    parallel_state = ParallelState.from_torch_distributed(world)
    return _run_modes(tiny_model(tp_state=parallel_state))


def _run_modes(model) -> dict:
    ctxs = [context(6, 30, mask_at=2), context(11, 31)]
    out = {}
    for mode, kw in MODES.items():
        res = generate(model, SPECIAL, ctxs, GenerationConfig(max_new_tokens=6, **kw))
        out[mode] = [[(r.tokens, r.score) for r in row] for row in res]
    return out


@pytest.mark.slow
def test_tp2_generation_equals_tp1(model):
    ref = _run_modes(model)
    results = run_distributed(_tp_worker, 2)
    assert results[0] == results[1]  # both ranks decide the same (scores bitwise: same gathered logits)
    for mode in MODES:
        got, want = results[0][mode], ref[mode]
        assert [[t for t, _ in row] for row in got] == [[t for t, _ in row] for row in want], mode
        np.testing.assert_allclose([s for row in got for _, s in row], [s for row in want for _, s in row],
                                   atol=1e-4)


# ------------------------------------------------------------------------ data-parallel synchronised stop
def _decode(model, special, ctx, kw, stop_sync=None):
    from model.generation import generate_blank

    layout = blank_layout(ctx, [], special.sop_id)
    mpos = ctx.index(MASK)
    res = generate_blank(model, special, [layout], [mpos], GenerationConfig(max_new_tokens=8, **kw),
                         stop_sync=stop_sync)
    return [(r.tokens, round(r.score, 6), r.ended) for r in res[0]]


@pytest.mark.parametrize("mode", list(MODES))
def test_stepping_on_after_done_leaves_results_unchanged(model, mode):
    """A rank that is done but kept stepping (its DP peers are not) returns what it returned alone."""
    ctx = context(12, 2)
    # Half the vocabulary ends a row: every mode is done well before 8 tokens.
    special = SpecialTokens(SOP, (EOP, *range(1, 240, 2)), SPECIAL.mask_ids, 0, 250)
    local = []

    def plain(local_done):  # the default behaviour, observed
        local.append(local_done)
        return local_done

    alone = _decode(model, special, ctx, MODES[mode], plain)
    if mode != "beam":  # (4 beams at length penalty 1 keep improving for all 8 tokens)
        assert len(local) < 8 and local[-1] is True
    steps = []

    def never_stop(local_done):
        steps.append(local_done)
        return False

    assert _decode(model, special, ctx, MODES[mode], never_stop) == alone
    assert len(steps) == 8 and steps[:len(local)] == local  # ran on to max_new_tokens after being done


def _dp_stop_worker(rank: int, world: int) -> dict:
    import torch.distributed as dist

    from model.generation import all_ranks_done

    model = tiny_model()
    ctx = context(12, 2 + rank)
    special = special_ending(model, ctx) if rank == 0 else SPECIAL  # rank 0 ends early, rank 1 runs on
    out = {}
    for mode, kw in MODES.items():
        calls = []
        sync = all_ranks_done(dist.group.WORLD, torch.device("cpu"))

        def counted(local_done, sync=sync, calls=calls):
            calls.append(local_done)
            return sync(local_done)

        out[mode] = (_decode(model, special, ctx, kw, counted), _decode(model, special, ctx, kw), len(calls))
    return out


@pytest.mark.slow
def test_dp_ranks_stop_together_with_their_own_results():
    """Two gloo ranks decode different contexts (one ends early): with ``all_ranks_done`` both run the same
    number of steps, and each rank's results equal its unsynchronised ones."""
    results = run_distributed(_dp_stop_worker, 2)
    for mode in MODES:
        (synced0, alone0, n0), (synced1, alone1, n1) = results[0][mode], results[1][mode]
        assert synced0 == alone0 and synced1 == alone1, mode
        assert n0 == n1, (mode, n0, n1)
    assert any(len(results[0][m][1][0][0]) < 8 for m in MODES)  # rank 0 really was done early


def test_blank_candidates_are_the_first_token_distribution(tok_model, sample_tok):
    """blank_candidates(k): blank 1 against a one-token greedy decode (its argmax and probability), blank 3
    against a hand-built pretraining layout after the two decoded spans, softmax over the text pieces and
    the end tokens only."""
    import math

    from model.generation import blank_candidates

    text = "Hello [MASK] world, [MASK] this is [sMASK] a test"
    res = fill_blanks(tok_model, sample_tok, text, GenerationConfig(max_new_tokens=3))
    cands = blank_candidates(tok_model, sample_tok, res, 5)
    assert [len(c) for c in cands] == [5, 5, 5]
    assert all(a[1] >= b[1] for c in cands for a, b in itertools.pairwise(c))  # best first
    one = fill_blanks(tok_model, sample_tok, text, GenerationConfig(max_new_tokens=1))
    best_id, best_p = cands[0][0]
    assert one.spans[0] == ([] if best_id in (sample_tok.eop_id, sample_tok.eos_id) else [best_id])
    assert best_p == pytest.approx(math.exp(one.scores[0]), rel=1e-5)

    ids, (p1, p2, p3), (s1, s2, _) = res.context_ids, res.mask_positions, res.spans
    sop, n = sample_tok.sop_id, len(ids)
    tokens = ids + [sop, *s1] + [sop, *s2] + [sop]
    pos = list(range(n)) + [p1] * (len(s1) + 1) + [p2] * (len(s2) + 1) + [p3]
    block = [0] * n + list(range(1, len(s1) + 2)) + list(range(1, len(s2) + 2)) + [1]
    with torch.no_grad():
        logits, _ = tok_model(torch.tensor([tokens]), torch.tensor([[pos, block]]), torch.tensor([n]))
    allowed = list(range(sample_tok.num_text_tokens)) + [sample_tok.eos_id, sample_tok.eop_id]
    probs = torch.softmax(logits[0, -1, allowed].double(), -1)
    top = torch.topk(probs, 5)
    assert [i for i, _ in cands[2]] == [allowed[i] for i in top.indices.tolist()]
    np.testing.assert_allclose([p for _, p in cands[2]], top.values.tolist(), rtol=1e-4)


def test_beam_hypothesis_length_is_glms():
    """GLM's BeamHypotheses (generation_utils.py): an ended hypothesis is scored logprob / n**lp with n the
    tokens before the end token; a beam running at the last step by all its tokens. Tokens w, x, END; two
    beams, lp 1, 3 steps, p(w)=.6 p(x)=.4; after w: END .6, w .4; after x: w 1; after x w: END .3, w .7;
    after w w: END .8, w .2. Step 1 closes [w] (log .36 = -1.0217, n = 1: -1.0217); step 2 closes [w w]
    (log .192 = -1.6503, n = 2: -0.8251); running at the end: [x w w] (log .28, n = 3: -0.4243). So the two
    best are [x w w] and [w w] (counting the end token, n + 1, would rank [w] at -0.5108 second)."""
    import math

    from model.generation import _beam_search

    W, X, END = 0, 1, 2
    table = {(): {W: .6, X: .4}, (W,): {END: .6, W: .4}, (X,): {W: 1.0}, (X, W): {END: .3, W: .7},
             (W, W): {END: .8, W: .2}}

    class Fake:
        def logits(self, generated):
            rows = [table.get(tuple(g), {END: 1.0}) for g in generated.tolist()]
            return torch.tensor([[math.log(p[v]) if v in p else -1e4 for v in range(4)] for p in rows])

        def reorder(self, src):
            pass

    special = SpecialTokens(sop_id=5, end_ids=(END,), vocab_limit=4)
    cfg = GenerationConfig(max_new_tokens=3, num_beams=2, length_penalty=1.0, num_return_sequences=2)
    best, second = _beam_search(Fake(), 1, cfg, special, torch.device("cpu"))[0]
    assert (best.tokens, best.ended) == ([X, W, W], False)
    assert best.score == pytest.approx(math.log(.4 * 1.0 * .7) / 3, abs=1e-5)
    assert (second.tokens, second.ended) == ([W, W], True)
    assert second.score == pytest.approx(math.log(.6 * .4 * .8) / 2, abs=1e-5)
