"""GLM generation: blank filling with a key/value cache; greedy, top-k / top-p sampling, beam search.

GLM generates the content of a blank (a ``[MASK]``, ``[sMASK]`` or ``[gMASK]`` token of the context) as
Part B of the pretraining layout (the GLM paper, Figure 2; GLM's ``generate_samples.py``):

    tokens      A_0 ... A_{n-1}   [sop]  g_1   g_2  ...
    positions   0   ...   n-1       p     p     p   ...     (p = position of the blank's mask token)
    block pos   0   ...   0         1     2     3   ...
    mask        Part A (the first ``sep = n`` tokens) is bidirectional; Part B is causal and sees all of A.

Because no Part-A row attends to Part B, the keys/values of the context never change while generating:
they are computed once (``KVCache``) and each step feeds one new position. With several blanks, each
filled span (``[sop]`` + span, without its ``[eop]``) stays in the sequence as Part B, so the next blank
sees the earlier spans exactly as the pretraining collator lays out several spans.

Scores. ``logprob`` of a result is the sum over its generated tokens (the end token included when it
ended) of the model's log-probability ``log softmax(logits)`` over the generatable vocabulary (embedding
rows beyond the tokenizer are vocabulary padding, and command tokens other than the end tokens are never
generated). For beam search ``score = logprob / len**alpha`` with ``len`` the hypothesis length of GLM's
``BeamHypotheses`` (``generation_utils.py``): the tokens generated before the end token (at least 1), or all
of them for a beam still running at the last step; for greedy and sampling ``score = logprob``.
Temperature and top-k / top-p only shape the sampling distribution.

Beam search is the deterministic variant of GLM's ``--select-topk`` (the HF ``BeamSearchScorer``): at each
step the ``2 * num_beams`` best (beam, token) pairs by accumulated log-probability are taken; an end token
among the first ``num_beams`` closes a hypothesis; a batch row is done when it has ``num_beams``
hypotheses and the worst of them scores at least ``best / t**alpha``, with ``best`` the step's best
candidate (an end token's included) and ``t`` the tokens generated before the step (HF's
``early_stopping=False`` test as GLM runs it).

Sampling draws from a CPU ``torch.Generator`` per returned sequence ``j`` seeded with ``seed + j``: the
samples are a pure function of (seed, prompt, j), identical on every tensor-parallel rank (the logits are
gathered from the vocabulary slices first), whatever else is in the batch, cached or not.

Batches: contexts of different lengths are right-padded; padded key columns are masked out of every
query of their row, so a row's result does not depend on the other rows.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from model.glm import KVCache

NEG_INF = float("-inf")


# ------------------------------------------------------------------------------------------ configs
@dataclass
class GenerationConfig:
    """How to decode one blank (GLM flag names in parentheses).

    ``max_new_tokens`` (``--out-seq-length``) counts generated tokens, the end token included;
    ``min_new_tokens`` (``--min-tgt-length``) bans the end tokens before that many tokens were generated.
    Beam search when ``num_beams > 1``; else sampling when ``do_sample``; else greedy.
    """

    max_new_tokens: int = 64
    min_new_tokens: int = 0
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 0.0
    num_beams: int = 1
    length_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    num_return_sequences: int = 1
    seed: int = 1234
    use_cache: bool = True

    def validate(self) -> GenerationConfig:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens (--out-seq-length) = {self.max_new_tokens} must be >= 1")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ValueError(f"min_new_tokens (--min-tgt-length) = {self.min_new_tokens} must be in "
                             f"[0, max_new_tokens={self.max_new_tokens}]")
        if self.temperature <= 0:
            raise ValueError(f"temperature = {self.temperature} must be > 0")
        if self.top_k < 0 or not 0.0 <= self.top_p <= 1.0:
            raise ValueError(f"top_k = {self.top_k} must be >= 0 and top_p = {self.top_p} in [0, 1]")
        if self.num_beams < 1 or self.num_return_sequences < 1 or self.no_repeat_ngram_size < 0:
            raise ValueError("num_beams and num_return_sequences must be >= 1, no_repeat_ngram_size >= 0")
        if self.num_beams > 1 and self.num_return_sequences > self.num_beams:
            raise ValueError(f"num_return_sequences = {self.num_return_sequences} exceeds num_beams = "
                             f"{self.num_beams}")
        return self

    @property
    def mode(self) -> str:
        return "beam" if self.num_beams > 1 else ("sample" if self.do_sample else "greedy")


@dataclass(frozen=True)
class SpecialTokens:
    """The ids generation needs. ``vocab_limit``: ids >= it are embedding padding, never generated;
    ``banned_ids``: never generated either (with a tokenizer: every command token but the end tokens, since a
    generated ``[sop]``/``[MASK]``/``[CLS]`` inside a span would break the blank-infilling layout)."""

    sop_id: int
    end_ids: tuple[int, ...]
    mask_ids: tuple[int, ...] = ()
    pad_id: int = 0
    vocab_limit: int | None = None
    banned_ids: tuple[int, ...] = ()

    @classmethod
    def from_tokenizer(cls, tokenizer) -> SpecialTokens:
        end = (tokenizer.eop_id, tokenizer.eos_id)
        commands = [i for i in range(tokenizer.num_text_tokens, len(tokenizer)) if i not in end]
        return cls(sop_id=tokenizer.sop_id, end_ids=end,
                   mask_ids=(tokenizer.mask_id, tokenizer.smask_id, tokenizer.gmask_id),
                   pad_id=tokenizer.pad_id, vocab_limit=len(tokenizer), banned_ids=tuple(commands))


@dataclass
class GenerationResult:
    """One generated span: ``tokens`` without ``[sop]`` and the end token; ``ended`` by an end token."""

    tokens: list[int]
    score: float
    logprob: float
    ended: bool


@dataclass
class BlankLayout:
    """One row's input: Part A then Part B spans. ``positions``/``block_positions`` [L]; ``sep`` = |Part A|."""

    tokens: list[int]
    positions: list[int]
    block_positions: list[int]
    sep: int

    def position_ids(self) -> torch.Tensor:
        return torch.tensor([self.positions, self.block_positions], dtype=torch.long)  # [2, L]

    def __len__(self) -> int:
        return len(self.tokens)


def blank_layout(context_ids: Sequence[int], filled: Sequence[tuple[int, Sequence[int]]], sop_id: int,
                 next_mask_position: int | None = None) -> BlankLayout:
    """Part A = ``context_ids`` (positions 0..n-1, block 0, bidirectional: ``sep = n``); then for each
    ``(mask_position, span)`` of ``filled``: ``[sop] + span`` at the mask's position with block positions
    1..len(span)+1; then, if given, the ``[sop]`` that starts the blank at ``next_mask_position``."""
    n = len(context_ids)
    tokens, pos, block = list(context_ids), list(range(n)), [0] * n
    for p, span in filled:
        tokens += [sop_id, *span]
        pos += [p] * (len(span) + 1)
        block += list(range(1, len(span) + 2))
    if next_mask_position is not None:
        tokens.append(sop_id)
        pos.append(next_mask_position)
        block.append(1)
    return BlankLayout(tokens, pos, block, n)


# ------------------------------------------------------------------------------------------ model calls
def _full_logits(model, logits: torch.Tensor) -> torch.Tensor:
    """[..., V/p] vocab-parallel slice -> [..., V] on every TP rank (identical values everywhere)."""
    if model.config.parallel_output and model.state.tp_size > 1:
        from mpu.mappings import gather_from_tensor_parallel_region

        logits = gather_from_tensor_parallel_region(logits, model.state)
    return logits


def _padded_inputs(layouts: Sequence[BlankLayout], device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded tokens [B, L], position ids [B, 2, L] and lengths [B]."""
    L = max(len(x) for x in layouts)
    B = len(layouts)
    tokens = torch.zeros(B, L, dtype=torch.long)
    pos = torch.zeros(B, 2, L, dtype=torch.long)
    for b, x in enumerate(layouts):
        tokens[b, :len(x)] = torch.tensor(x.tokens)
        pos[b, :, :len(x)] = x.position_ids()
    lengths = torch.tensor([len(x) for x in layouts])
    return tokens.to(device), pos.to(device), lengths.to(device)


def _layout_mask(lengths: torch.Tensor, seps: torch.Tensor, query_start: int, query_len: int,
                 key_len: int) -> torch.Tensor:
    """Bool [B, 1, Lq, Lk] of GLM's sep mask for queries ``query_start..+Lq`` over keys ``0..Lk``, with the
    padded keys ``j >= length`` hidden; a padded query sees only itself (keeps softmax finite)."""
    device = lengths.device
    q = torch.arange(query_start, query_start + query_len, device=device).view(1, -1, 1)  # [1, Lq, 1]
    k = torch.arange(key_len, device=device).view(1, 1, -1)  # [1, 1, Lk]
    n = lengths.view(-1, 1, 1)
    visible = (k < n) & ((k < seps.view(-1, 1, 1)) | (k <= q))  # [B, Lq, Lk]
    visible = visible | ((q >= n) & (k == q))
    return visible.unsqueeze(1)


class _CachedDecoder:
    """Encodes the prefixes once into a KV cache, then feeds one position per step."""

    def __init__(self, model, layouts: Sequence[BlankLayout], mask_positions: torch.Tensor, expand: int,
                 max_new_tokens: int, sop_id: int, prefix_cache: KVCache | None = None) -> None:
        device = mask_positions.device
        tokens, pos, lengths = _padded_inputs(layouts, device)
        seps = torch.tensor([x.sep for x in layouts], device=device)
        P = tokens.size(1)
        if prefix_cache is None:
            prefix_cache = KVCache(model.config.num_layers, capacity=P + max_new_tokens)
        M = prefix_cache.length
        assert M == 0 or (len(layouts) == 1 and M <= P), "a reused prefix cache serves one unpadded row"
        # Unpadded rows need no mask tensor: the model builds its kernel's input from sep (on CUDA a
        # FlexAttention block mask). Padded rows need the padded keys hidden: a full mask.
        self.padded = not bool((lengths == P).all())
        if P > M:
            # The model's sep counts from the first new position (every cached key is visible anyway).
            mask = _layout_mask(lengths, seps, M, P - M, P) if self.padded else (seps - M).clamp(min=0)
            no_logits = torch.zeros(tokens.size(0), P - M, dtype=torch.bool, device=device)
            model(tokens[:, M:], pos[:, :, M:], mask, kv_cache=prefix_cache, logit_mask=no_logits)  # fills the cache
        self.prefix_cache = prefix_cache
        rows = torch.arange(len(layouts), device=device).repeat_interleave(expand)
        self.cache = prefix_cache.select(rows)
        for c in self.cache.layers:
            c.capacity_hint = P + max_new_tokens
        # Keys a generated query may see: its row's real prefix, then every generated position.
        self.key_valid = torch.cat([torch.arange(P, device=device).view(1, -1) < lengths[rows].view(-1, 1),
                                    torch.ones(len(rows), max_new_tokens, dtype=torch.bool, device=device)], dim=1)
        self.model, self.mask_positions, self.sop_id, self.P = model, mask_positions, sop_id, P

    def logits(self, generated: torch.Tensor) -> torch.Tensor:
        """Next-token logits [R, V] given the tokens generated so far [R, t]."""
        R, t = generated.shape
        last = generated[:, -1:] if t else torch.full((R, 1), self.sop_id, device=generated.device)
        pos = torch.stack([self.mask_positions.view(R, 1), torch.full((R, 1), t + 1, device=generated.device)],
                          dim=1)  # [R, 2, 1]
        if self.padded:
            mask = self.key_valid[:, :self.P + t + 1].view(R, 1, 1, -1)  # [R, 1, 1, K]
        else:  # sep 0: the new position sees every cached key and itself, i.e. all K keys
            mask = torch.zeros(R, dtype=torch.long, device=generated.device)
        logits, _ = self.model(last, pos, mask, kv_cache=self.cache)
        return _full_logits(self.model, logits[:, -1])

    def reorder(self, index: torch.Tensor) -> None:
        """Row i continues row ``index[i]``. The search only maps rows onto rows of the same context, whose
        first ``P`` (prefix) positions are equal, so only the generated positions move."""
        self.cache.reorder_(index, self.P)


class _UncachedDecoder:
    """Re-encodes the whole sequence (prefix + [sop] + generated) at every step: the reference path."""

    def __init__(self, model, layouts: Sequence[BlankLayout], mask_positions: torch.Tensor, expand: int,
                 sop_id: int) -> None:
        self.model, self.layouts, self.expand, self.sop_id = model, layouts, expand, sop_id
        self.mask_positions = mask_positions.tolist()

    def logits(self, generated: torch.Tensor) -> torch.Tensor:
        device = generated.device
        rows = []
        for r, g in enumerate(generated.tolist()):
            base = self.layouts[r // self.expand]
            p = self.mask_positions[r]
            rows.append(BlankLayout(base.tokens + [self.sop_id, *g], base.positions + [p] * (len(g) + 1),
                                    base.block_positions + list(range(1, len(g) + 2)), base.sep))
        tokens, pos, lengths = _padded_inputs(rows, device)
        seps = torch.tensor([x.sep for x in rows], device=device)
        if bool((lengths == lengths[0]).all()):
            mask = seps  # the model's own sep mask: the plain, unpadded computation
        else:
            mask = _layout_mask(lengths, seps, 0, tokens.size(1), tokens.size(1))
        last = torch.arange(tokens.size(1), device=device).view(1, -1) == (lengths - 1).view(-1, 1)  # [R, L]
        logits, _ = self.model(tokens, pos, mask, logit_mask=last)  # [R, V/p]: each row's last position only
        return _full_logits(self.model, logits)  # [R, V]

    def reorder(self, index: torch.Tensor) -> None:
        pass  # the search reorders ``generated``, which is all this decoder keeps


# ------------------------------------------------------------------------------------------ processors
@functools.lru_cache(maxsize=8)
def _never_generated(special: SpecialTokens, vocab: int, device: torch.device) -> torch.Tensor | None:
    """Bool [V], True at the padding rows and banned ids (None if there are none); built once per decoding
    setup rather than at every step."""
    never = torch.zeros(vocab, dtype=torch.bool)
    if special.vocab_limit is not None:
        never[special.vocab_limit:] = True
    never[[i for i in special.banned_ids if i < vocab]] = True
    return never.to(device) if bool(never.any()) else None


def _log_probs(logits: torch.Tensor, special: SpecialTokens) -> torch.Tensor:
    """log softmax over the generatable vocabulary, fp32 [R, V]; padding and banned ids get -inf."""
    logits = logits.float()
    never = _never_generated(special, logits.size(-1), logits.device)
    if never is not None:
        logits = logits.masked_fill(never, NEG_INF)  # one pass, a new tensor (the caller's logits unchanged)
    return F.log_softmax(logits, dim=-1)


def _banned(scores: torch.Tensor, generated: torch.Tensor, step: int, config: GenerationConfig,
            special: SpecialTokens) -> torch.Tensor:
    """Set -inf on end tokens before ``min_new_tokens`` and on tokens that would repeat an n-gram."""
    if step < config.min_new_tokens:
        scores = scores.clone()
        scores[:, list(special.end_ids)] = NEG_INF
    n = config.no_repeat_ngram_size
    if n > 0 and step + 1 >= n:
        scores = scores.clone()
        for r, g in enumerate(generated.tolist()):
            prefix = tuple(g[len(g) - n + 1:]) if n > 1 else ()
            banned = {g[i + n - 1] for i in range(len(g) - n + 1) if tuple(g[i:i + n - 1]) == prefix}
            if banned:
                scores[r, list(banned)] = NEG_INF
    return scores


def _filter_top_k_top_p(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """GLM's ``top_k_logits``: keep the k largest, then the smallest set with cumulative prob >= p."""
    if top_k > 0:
        kth = logits.topk(min(top_k, logits.size(-1)), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, NEG_INF)
    if 0.0 < top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove = cum > top_p
        remove[:, 1:] = remove[:, :-1].clone()  # keep the token that crosses p
        remove[:, 0] = False
        logits = logits.masked_fill(remove.scatter(1, order, remove), NEG_INF)
    return logits


def _sample(logits: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
    """Inverse-CDF draw per row with its own CPU generator: token = first index whose CDF exceeds u."""
    probs = logits.float().softmax(dim=-1).cpu()
    cdf = probs.cumsum(dim=-1)  # [R, V]
    u = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in generators]).float()
    idx = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(1), right=True).squeeze(1)
    return idx.clamp_max(probs.size(-1) - 1).to(logits.device)


# ------------------------------------------------------------------------------------------ searches
TokenCallback = Callable[[int, int], None]


StopSync = Callable[[bool], bool]


def _stop(local_done: bool, stop_sync: StopSync | None) -> bool:
    return stop_sync(local_done) if stop_sync is not None else local_done


def all_ranks_done(group, device) -> StopSync:
    """A ``stop_sync`` for ``generate_blank``: decoding stops when every rank of ``group`` is done.

    Needed when the ranks of a data-parallel group decode different batches through a collective forward
    (ZeRO-3 gathers each layer's parameters from all DP ranks): a rank that stopped early would leave the
    others waiting in the gather. A rank already done keeps stepping with its rows padded, which leaves
    its results unchanged; every rank then runs the same number of forward calls. One all-reduce of one
    integer per generated token."""
    import torch.distributed as dist

    def stop(local_done: bool) -> bool:
        flag = torch.tensor([1 if local_done else 0], dtype=torch.int32, device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN, group=group)
        return bool(flag.item())

    return stop


def _greedy_or_sample(decoder, B: int, expand: int, config: GenerationConfig, special: SpecialTokens,
                      device, on_token: TokenCallback | None,
                      stop_sync: StopSync | None = None) -> list[list[GenerationResult]]:
    R = B * expand
    generators = [torch.Generator().manual_seed(config.seed + (r % expand)) for r in range(R)]
    generated = torch.zeros(R, 0, dtype=torch.long, device=device)
    finished = torch.zeros(R, dtype=torch.bool, device=device)
    ended = torch.zeros(R, dtype=torch.bool, device=device)
    lengths = torch.zeros(R, dtype=torch.long, device=device)
    logprob = torch.zeros(R, dtype=torch.float64, device=device)
    end_ids = torch.tensor(special.end_ids, device=device)
    for step in range(config.max_new_tokens):
        logits = decoder.logits(generated).float()  # [R, V]
        logp = _log_probs(logits, special)
        scores = _banned(logp, generated, step, config, special)
        if config.do_sample:
            shaped = logits / config.temperature if config.temperature != 1.0 else logits  # x / 1 == x
            shaped = shaped.masked_fill(torch.isinf(scores), NEG_INF)
            tok = _sample(_filter_top_k_top_p(shaped, config.top_k, config.top_p), generators)
        else:
            tok = scores.argmax(dim=-1)
        tok = tok.masked_fill(finished, special.pad_id)
        live = ~finished
        logprob += torch.where(live, logp.gather(1, tok.view(-1, 1)).squeeze(1).double(), 0.0)
        is_end = live & torch.isin(tok, end_ids)
        if on_token is not None:
            for r in (live & ~is_end).nonzero().flatten().tolist():
                on_token(r, int(tok[r]))
        lengths += (live & ~is_end).long()
        ended |= is_end
        finished |= is_end
        generated = torch.cat([generated, tok.view(-1, 1)], dim=1)
        if _stop(bool(finished.all()), stop_sync):
            break
    out = []
    g = generated.tolist()
    for b in range(B):
        rows = []
        for r in range(b * expand, (b + 1) * expand):
            lp = float(logprob[r])
            rows.append(GenerationResult(g[r][:int(lengths[r])], lp, lp, bool(ended[r])))
        out.append(rows)
    return out


@dataclass
class _Hypotheses:
    """The ``num_beams`` best finished hypotheses of one batch row (HF ``BeamHypotheses``)."""

    num_beams: int
    length_penalty: float
    items: list[tuple[float, float, list[int], bool]] = field(default_factory=list)

    def add(self, tokens: list[int], logprob: float, length: int, ended: bool) -> None:
        """``length``: the generated tokens before the end token (GLM's ``BeamHypotheses.add``, at least 1)."""
        score = logprob / (max(length, 1) ** self.length_penalty)
        if len(self.items) < self.num_beams or score > self.items[-1][0]:
            self.items.append((score, logprob, tokens, ended))
            self.items.sort(key=lambda x: -x[0])
            del self.items[self.num_beams:]

    def is_done(self, best: float, length: int) -> bool:
        """GLM's ``BeamHypotheses.is_done``: ``best`` is the step's best candidate score (an end token's
        included), ``length`` the tokens generated before this step (at least 1: GLM divides by zero there)."""
        if len(self.items) < self.num_beams:
            return False
        if best == NEG_INF:
            return True
        return self.items[-1][0] >= best / (max(length, 1) ** self.length_penalty)


def _beam_candidates(beam_scores: torch.Tensor, scores: torch.Tensor, nb: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``2 nb`` best (beam, token) pairs of each batch row by ``beam_scores[r] + scores[r, v]`` (fp64).

    ``beam_scores`` [B*nb] fp64, ``scores`` [B*nb, V] -> (scores [B, 2nb] fp64, ``beam * V + token`` [B, 2nb]),
    best first. The best pairs of a row are among each beam's own ``2 nb`` best tokens (adding the beam's score
    keeps the order of its tokens), so only those are summed and ranked, not all V per beam. Equal scores
    among them rank by ``beam * V + token``, lowest first, so a row's choice does not depend on what else is
    in the batch (only a tie at a beam's ``2 nb``-th place is left to ``topk``, which works per row).
    """
    R, V = scores.shape
    B = R // nb
    k = min(2 * nb, V)
    beam_top, beam_tok = scores.topk(k, dim=1)  # [R, k]
    cand = (beam_scores.view(R, 1) + beam_top.double()).view(B, nb * k)
    flat = (torch.arange(nb, device=scores.device).view(1, nb, 1) * V + beam_tok.view(B, nb, k)).view(B, nb * k)
    by_index = flat.argsort(dim=1)
    cand, flat = cand.gather(1, by_index), flat.gather(1, by_index)
    best = cand.argsort(dim=1, descending=True, stable=True)[:, :2 * nb]  # [B, min(2nb, nb*k)]
    return cand.gather(1, best), flat.gather(1, best)


def _beam_search(decoder, B: int, config: GenerationConfig, special: SpecialTokens,
                 device, stop_sync: StopSync | None = None) -> list[list[GenerationResult]]:
    nb = config.num_beams
    R = B * nb
    beam_scores = torch.full((B, nb), NEG_INF, dtype=torch.float64, device=device)
    beam_scores[:, 0] = 0.0  # all beams start equal: only beam 0 expands at the first step
    beam_scores = beam_scores.view(R)
    generated = torch.zeros(R, 0, dtype=torch.long, device=device)
    hyps = [_Hypotheses(nb, config.length_penalty) for _ in range(B)]
    done = [False] * B
    end_ids = set(special.end_ids)
    for step in range(config.max_new_tokens):
        logits = decoder.logits(generated)
        scores = _banned(_log_probs(logits, special), generated, step, config, special)  # [R, V]
        V = scores.size(-1)
        top_s, top_i = _beam_candidates(beam_scores, scores, nb)
        top_s, top_i = top_s.tolist(), top_i.tolist()
        gen_list = generated.tolist()
        next_scores, next_tokens, next_src = [], [], []
        for b in range(B):
            chosen: list[tuple[float, int, int]] = []
            if not done[b]:
                for rank, (s, i) in enumerate(zip(top_s[b], top_i[b], strict=True)):
                    if s == NEG_INF:
                        break
                    src, tok = b * nb + i // V, i % V
                    if tok in end_ids:
                        if rank < nb:
                            hyps[b].add(gen_list[src], s, step, True)  # ``step`` tokens precede the end
                    else:
                        chosen.append((s, tok, src))
                    if len(chosen) == nb:
                        break
                done[b] = hyps[b].is_done(top_s[b][0], step)
            chosen += [(NEG_INF, special.pad_id, b * nb)] * (nb - len(chosen))
            for s, tok, src in chosen:
                next_scores.append(s)
                next_tokens.append(tok)
                next_src.append(src)
        src = torch.tensor(next_src, device=device)
        beam_scores = torch.tensor(next_scores, dtype=torch.float64, device=device)
        generated = torch.cat([generated.index_select(0, src), torch.tensor(next_tokens, device=device).view(-1, 1)],
                              dim=1)
        if _stop(all(done), stop_sync):
            break
        decoder.reorder(src)
    gen_list = generated.tolist()
    scores_list = beam_scores.tolist()
    out = []
    for b in range(B):
        if not done[b]:
            for r in range(b * nb, (b + 1) * nb):
                if scores_list[r] != NEG_INF:
                    hyps[b].add(gen_list[r], scores_list[r], len(gen_list[r]), False)
        out.append([GenerationResult(t, s, lp, e) for s, lp, t, e in hyps[b].items[:config.num_return_sequences]])
    return out


# ------------------------------------------------------------------------------------------ public API
def _special(tokens) -> SpecialTokens:
    return tokens if isinstance(tokens, SpecialTokens) else SpecialTokens.from_tokenizer(tokens)


def _model_device(model) -> torch.device:
    return next(model.parameters()).device


def _check_lengths(model, layouts: Sequence[BlankLayout], config: GenerationConfig) -> None:
    limit = model.config.max_sequence_length
    longest = max(len(x) for x in layouts)
    if longest > limit or config.max_new_tokens > limit:
        raise ValueError(f"input of {longest} tokens / {config.max_new_tokens} new tokens exceeds the model's "
                         f"max_sequence_length={limit} (position table)")


def generate_blank(model, tokens: SpecialTokens, layouts: Sequence[BlankLayout], mask_positions: Sequence[int],
                   config: GenerationConfig, on_token: TokenCallback | None = None,
                   prefix_cache: KVCache | None = None,
                   stop_sync: StopSync | None = None) -> list[list[GenerationResult]]:
    """Decode the blank at ``mask_positions[b]`` after each row's ``layouts[b]`` (Part A + earlier spans).

    Returns per row the ``num_return_sequences`` results, best first. ``on_token(row, token)`` is called for
    every generated non-end token of greedy / sampling rows (``row = b * num_return_sequences + j``).
    ``prefix_cache`` (one row): keys/values of a prefix of ``layouts[0]``, extended in place to all of it.
    ``stop_sync(all rows of this call done) -> stop now``: decoding stops early only when it says so
    (``all_ranks_done`` for data-parallel ranks whose forward is collective).
    """
    config.validate()
    _check_lengths(model, layouts, config)
    device = _model_device(model)
    expand = config.num_beams if config.mode == "beam" else config.num_return_sequences
    mpos = torch.tensor(list(mask_positions), device=device).repeat_interleave(expand)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            if config.use_cache:
                decoder = _CachedDecoder(model, layouts, mpos, expand, config.max_new_tokens, tokens.sop_id,
                                         prefix_cache)
            else:
                decoder = _UncachedDecoder(model, layouts, mpos, expand, tokens.sop_id)
            if config.mode == "beam":
                return _beam_search(decoder, len(layouts), config, tokens, device, stop_sync)
            return _greedy_or_sample(decoder, len(layouts), expand, config, tokens, device, on_token, stop_sync)
    finally:
        model.train(was_training)


def generate(model, tokenizer, context_ids: Sequence[int] | Sequence[Sequence[int]], config: GenerationConfig,
             mask_positions: Sequence[int] | None = None,
             on_token: TokenCallback | None = None) -> list[GenerationResult] | list[list[GenerationResult]]:
    """Fill one blank of each context (Part A, bidirectional) by decoding from ``[sop]``.

    ``tokenizer``: a ``GLMTokenizer`` or ``SpecialTokens``. ``context_ids``: one context (list of ids) or a
    batch (list of lists, any lengths). The blank is ``mask_positions[b]`` or the first mask token of the
    context. Returns the n best ``GenerationResult`` (a list per context for a batch).
    """
    special = _special(tokenizer)
    single = len(context_ids) > 0 and isinstance(context_ids[0], int)
    batch = [list(context_ids)] if single else [list(c) for c in context_ids]
    if mask_positions is None:
        mask_positions = []
        for b, ctx in enumerate(batch):
            found = [i for i, t in enumerate(ctx) if t in special.mask_ids]
            if not found:
                raise ValueError(f"context {b} has no mask token (ids {special.mask_ids}) to fill")
            mask_positions.append(found[0])
    layouts = [blank_layout(ctx, [], special.sop_id) for ctx in batch]
    out = generate_blank(model, special, layouts, mask_positions, config, on_token)
    return out[0] if single else out


MASK_TOKENS = ("[MASK]", "[sMASK]", "[gMASK]")
_MASK_LIKE = re.compile(r"\[[A-Za-z]*MASK\]")


def encode_prompt(tokenizer, text: str) -> list[int]:
    """``[CLS] + encode(text)`` (+ ``<|endoftext|>`` unless it ends with ``[gMASK]``), as GLM's
    ``generate_samples.py``. A text without a mask gets `` [gMASK]`` appended (continue the text); an
    unknown mask-like token such as ``[XMASK]`` is a ValueError naming it."""
    unknown = sorted({m for m in _MASK_LIKE.findall(text) if m not in MASK_TOKENS})
    if unknown:
        raise ValueError(f"unknown mask token {', '.join(unknown)} in prompt; use one of {', '.join(MASK_TOKENS)}")
    if not any(m in text for m in MASK_TOKENS):
        text = text.rstrip() + " [gMASK]"
    ids = [tokenizer.cls_id] + tokenizer.encode(text)
    if ids[-1] != tokenizer.gmask_id:
        ids.append(tokenizer.eos_id)
    return ids


@dataclass
class FillResult:
    """A filled prompt: ``text`` with every blank replaced by its span; ``spans``/``scores`` per blank."""

    prompt: str
    context_ids: list[int]
    mask_positions: list[int]
    spans: list[list[int]]
    scores: list[float]
    text: str


def fill_blanks(model, tokenizer, text: str, config: GenerationConfig,
                on_token: TokenCallback | None = None,
                on_blank: Callable[[int, GenerationResult], None] | None = None) -> FillResult:
    """Fill every ``[MASK]``/``[sMASK]``/``[gMASK]`` of ``text`` left to right (GLM blank filling).

    Blank k is decoded after Part A and the spans of blanks 0..k-1 (each ``[sop] + span`` at its mask's
    position, block positions 1, 2, ...), the pretraining layout; the keys/values of that prefix are cached
    and extended by each finished span. The best result of each blank is kept. ``on_token(0, id)`` streams
    greedy / sampled tokens; ``on_blank(k, result)`` is called when blank k is done.
    """
    special = SpecialTokens.from_tokenizer(tokenizer)
    ids = encode_prompt(tokenizer, text)
    masks = [i for i, t in enumerate(ids) if t in special.mask_ids]
    filled: list[tuple[int, list[int]]] = []
    scores: list[float] = []
    cache = KVCache(model.config.num_layers, capacity=len(ids) + len(masks) * (config.max_new_tokens + 1)) \
        if config.use_cache else None
    for k, p in enumerate(masks):
        layout = blank_layout(ids, filled, special.sop_id)
        best = generate_blank(model, special, [layout], [p], config, on_token, prefix_cache=cache)[0][0]
        filled.append((p, best.tokens))
        scores.append(best.score)
        if on_blank is not None:
            on_blank(k, best)
    spans = dict(filled)
    out_ids: list[int] = []
    body = ids[1:-1] if ids[-1] == tokenizer.eos_id else ids[1:]
    for i, t in enumerate(body, start=1):
        out_ids.extend(spans[i] if i in spans else [t])
    return FillResult(text, ids, masks, [s for _, s in filled], scores, tokenizer.decode(out_ids))


def blank_candidates(model, tokenizer, fill: FillResult, k: int) -> list[list[tuple[int, float]]]:
    """The ``k`` likeliest first tokens of each blank of ``fill`` with their probabilities, best first.

    For blank j: ``softmax`` over the generatable vocabulary (end tokens included) of the logits at the
    ``[sop]`` that opens it, after Part A and the spans ``fill_blanks`` decoded for blanks 0..j-1: the
    distribution that greedy decoding takes the first token from. It shows what the model expects in a blank
    even when the decoded span is empty or a bare word-boundary piece."""
    special = SpecialTokens.from_tokenizer(tokenizer)
    device = _model_device(model)
    out: list[list[tuple[int, float]]] = []
    was_training = model.training
    model.eval()
    filled = list(zip(fill.mask_positions, fill.spans, strict=True))
    try:
        with torch.no_grad():
            for j, p in enumerate(fill.mask_positions):
                layout = blank_layout(fill.context_ids, filled[:j], special.sop_id)
                decoder = _UncachedDecoder(model, [layout], torch.tensor([p]), 1, special.sop_id)
                nothing_yet = torch.zeros(1, 0, dtype=torch.long, device=device)
                probs = _log_probs(decoder.logits(nothing_yet), special).exp()[0]  # [V]
                top = torch.topk(probs, min(k, int((probs > 0).sum())))
                out.append([(int(i), float(v)) for v, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)])
    finally:
        model.train(was_training)
    return out


__all__ = ["GenerationConfig", "GenerationResult", "SpecialTokens", "BlankLayout", "blank_layout", "generate",
           "generate_blank", "encode_prompt", "fill_blanks", "FillResult", "MASK_TOKENS", "blank_candidates"]
