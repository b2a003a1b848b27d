"""What makes batched decoding fast keeps its results: beam candidates from each beam's best tokens equal
the ranking of all (beam, token) pairs, in-place beam reordering of the cache equals ``select``, and no
logits are computed for the context."""

from __future__ import annotations

import torch

from model import GLMConfig, GLMModel
from model.generation import GenerationConfig, SpecialTokens, _beam_candidates, generate
from model.glm import KVCache


def _brute_force(beam_scores: torch.Tensor, scores: torch.Tensor, nb: int):
    """Every (beam, token) pair of a row, sorted by (-score, beam * V + token): the first 2 nb."""
    R, V = scores.shape
    out_s, out_i = [], []
    for b in range(R // nb):
        pairs = [(float(beam_scores[b * nb + j]) + float(scores[b * nb + j, v]), j * V + v)
                 for j in range(nb) for v in range(V)]
        pairs.sort(key=lambda p: (-p[0], p[1]))
        out_s.append([p[0] for p in pairs[:2 * nb]])
        out_i.append([p[1] for p in pairs[:2 * nb]])
    return out_s, out_i


def test_beam_candidates_equal_ranking_all_pairs_with_ties() -> None:
    g = torch.Generator().manual_seed(0)
    for nb, V in ((3, 40), (4, 5), (2, 1), (5, 300)):
        B = 3
        scores = torch.randn(B * nb, V, generator=g).log_softmax(-1)
        # Exact ties among the best tokens of a beam and across beams; banned tokens; one dead beam.
        best = scores.argmax(-1)
        scores[torch.arange(B * nb), (best + 1) % V] = scores.max(-1).values
        scores[1] = scores[0]
        scores[:, (best[2] + 2) % V] = float("-inf")
        beam_scores = -torch.rand(B * nb, generator=g).double()
        beam_scores[1] = beam_scores[0]
        beam_scores[nb] = float("-inf")
        top_s, top_i = _beam_candidates(beam_scores, scores, nb)
        ref_s, ref_i = _brute_force(beam_scores, scores, nb)
        assert top_s.tolist() == ref_s
        # Pairs scored -inf are never used by the search (it stops at the first); the finite ones must match.
        finite = [[i for s, i in zip(rs, ri, strict=True) if s != float("-inf")] for rs, ri in zip(ref_s, ref_i, strict=True)]
        got = [[i for s, i in zip(rs, ri, strict=True) if s != float("-inf")]
               for rs, ri in zip(top_s.tolist(), top_i.tolist(), strict=True)]
        assert got == finite


def test_in_place_reorder_equals_select_for_rows_of_one_context() -> None:
    g = torch.Generator().manual_seed(1)
    prefix = KVCache(2, capacity=12)
    for layer in prefix.layers:
        layer.append(torch.randn(2, 3, 7, 4, generator=g), torch.randn(2, 3, 7, 4, generator=g))  # 2 contexts
    rows = torch.tensor([0, 0, 0, 1, 1, 1])  # 3 beams per context
    cache = prefix.select(rows)
    for layer in cache.layers:  # generated positions differ per beam
        layer.append(torch.randn(6, 3, 3, 4, generator=g), torch.randn(6, 3, 3, 4, generator=g))
    index = torch.tensor([2, 2, 0, 4, 3, 3])  # within each context
    expected = cache.select(index)
    cache.reorder_(index, start=7)
    for got, ref in zip(cache.layers, expected.layers, strict=True):
        assert got.length == ref.length == 10
        assert torch.equal(got.k[:, :, :10], ref.k[:, :, :10]) and torch.equal(got.v[:, :, :10], ref.v[:, :, :10])


def test_context_gets_no_logits() -> None:
    """The cached decoder's prefill only fills the cache: no forward returns more logit rows than rows."""
    cfg = GLMConfig(num_layers=2, vocab_size=256, hidden_size=32, num_attention_heads=4, max_sequence_length=64,
                    hidden_dropout=0.0, attention_dropout=0.0)
    model = GLMModel(cfg, init_seed=3).eval()
    shapes = []
    model.register_forward_hook(lambda mod, args, out: shapes.append(tuple(out[0].shape)))
    special = SpecialTokens(sop_id=246, end_ids=(247,), mask_ids=(248,), vocab_limit=250)
    ctx = [[5, 6, 7, 248, 9, 10, 11, 12], [13, 248, 15]]
    generate(model, special, ctx, GenerationConfig(max_new_tokens=3, num_beams=2))
    assert shapes[0] == (0, 256)  # prefill of 2 rows x 8 positions
    assert all(s == (4, 1, 256) for s in shapes[1:])  # one position of 2 x 2 beams per step
