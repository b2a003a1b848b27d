"""The GLM network: word + position + block-position embeddings, pre-LN transformer, tied output.

Reads like single-device code; tensor parallelism shows only as the mpu layer classes and the local head
count ``np = n / p``. Dims: B batch, L query length, M cached length, K = M + L key length, h hidden,
n heads, np local heads, D head dim (h / n), hp = np * D local hidden, V vocabulary (V/p local slice).

Math per layer (GLM's ``mpu/transformer.py``):
    x = LN_1(h);  a = Dense(softmax(Q K^T / sqrt(D) masked) V);  h1 = h + dropout(a)
    y = LN_2(h1); h2 = h1 + dropout(W_2 gelu_tanh(W_1 y))
Output: logits = LN_f(h_L) @ E^T with E the (vocab-parallel) word embedding; no output bias.

Attention is described by ``sep`` [B] (the length of Part A per row) and the KV-cache offset M, never by a
dense [B, 1, L, K] mask built by the caller: query i (segment-relative) sees key j iff ``j < M + sep`` or
``j <= M + i``. The transformer and ``attention_core`` turn that into what the kernel needs: a FlexAttention
block mask on CUDA (two mask-free / causal-flash SDPA calls under attention dropout), the dense bool mask on
the CPU (measured fastest there). Callers that need more than a prefix LM (right-padded decoding batches)
still pass a full bool mask.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from model.config import GLMConfig
from model.masks import normalize_attention_mask, prefix_lm_block_mask, sep_attention_mask, sep_runs
from mpu.cross_entropy import vocab_parallel_cross_entropy
from mpu.initialize import ParallelState
from mpu.layers import (
    ColumnParallelLinear,
    RowParallelLinear,
    VocabParallelEmbedding,
    normal_init,
    scaled_normal_init,
)
from mpu.mappings import copy_to_tensor_parallel_region, gather_from_tensor_parallel_region
from mpu.random import MODEL_PARALLEL_RNG
from mpu.random import checkpoint as checkpoint_fn
from mpu.utils import divide

try:  # FlexAttention (torch >= 2.5): the CUDA prefix-LM kernel
    from torch.nn.attention.flex_attention import BlockMask, flex_attention
except ImportError:  # pragma: no cover - older torch: SDPA everywhere
    BlockMask = flex_attention = None

_compiled_flex = None


def _flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask) -> torch.Tensor:
    # Uncompiled flex_attention materialises the scores; compiled, it is a fused kernel that skips the
    # fully masked blocks. Compiled once per process, on first use. Inside a model under torch.compile
    # (--compile) dynamo traces flex_attention itself: going through the global here would add a guard on
    # it, which the first call flips, so the whole model would compile twice.
    if torch.compiler.is_compiling():
        return flex_attention(q, k, v, block_mask=block_mask)
    global _compiled_flex
    if _compiled_flex is None:
        _compiled_flex = torch.compile(flex_attention, dynamic=False)
    return _compiled_flex(q, k, v, block_mask=block_mask)


def use_flex_attention(x: torch.Tensor, dropout_p: float, query_len: int, head_dim: int) -> bool:
    """FlexAttention only on CUDA, without attention dropout (flex_attention has none), for at least one
    128-query block (a decoding step's few queries are cheaper through SDPA than a new block mask) and for
    heads of at least 16 dimensions (its kernels' minimum)."""
    return (flex_attention is not None and x.is_cuda and dropout_p == 0.0 and query_len >= 128
            and head_dim >= 16)


# What the layers get from ``sep`` off CUDA: "dense" (one bool [B, 1, L, K] mask per forward, SDPA's CPU
# flash kernel with it) or "split" (``attention_core``'s two mask-free / causal SDPA calls per run of equal
# sep). Measured on the 2-core CPU (2 layers, hidden 256, fp32 forward+backward; README Benchmarks): the
# split is slower (L 2048 batch 1: 1.84 s vs 1.69 s; L 256 batch 8 with 8 distinct seps: 2.5 s vs 1.1 s)
# and needs no less peak memory, so the CPU keeps the dense mask. On CUDA the split runs flash kernels.
CPU_SEP_KERNEL = "dense"


def attention_core(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sep: Any,
                   dropout_p: float = 0.0) -> torch.Tensor:
    """softmax(q k^T / sqrt(D), masked) v for q [B, np, L, D], k/v [B, np, K, D] -> [B, np, L, D].

    ``sep`` says which keys a query sees; the first ``M = K - L`` keys are the KV cache (visible to all):
    - ``sep`` [B] (or one value for every row): GLM's prefix LM, query i sees key j iff ``j < M + sep[b]``
      or ``j <= M + i``. Split at ``s = sep[b]``: Part-A queries (i < s) see exactly the keys ``j < M + s``,
      unmasked; Part-B queries (i >= s > j - M for every Part-A key) see exactly ``j <= M + i``, a causal
      mask aligned to the bottom right (``causal_lower_right``). Two SDPA calls per run of equal ``sep``,
      no [L, K] mask, and Part-A queries skip the Part-B keys. Each query row's softmax is the one of the
      dense mask (the masked entries have probability exactly 0 in fp32 either way).
    - the runs ``sep_runs(sep, L)`` of such a ``sep`` (a list): the same, with ``sep`` already read on the
      host (``GLMTransformer`` reads it once per forward, not once per layer: one device sync, not one per
      layer, and under torch.compile one graph break instead of one per layer).
    - a bool mask [B or 1, 1, L, K] (True = attend): SDPA with it (right-padded decoding batches).
    - a FlexAttention ``BlockMask`` (``model.masks.prefix_lm_block_mask``, CUDA): ``flex_attention``.
    Equal to GLM's ``scores*m + (-65504)*(1-m)`` formulation: every row sees at least its own column. GLM's
    ``attention_scale`` s > 1 (pre-scale q and k by 1/sqrt(s), subtract the row max after masking, multiply
    by s) only shifts each row of the scores by a constant, so it is the same softmax and needs no code here
    (``GLMConfig`` keeps the field).
    """
    if BlockMask is not None and isinstance(sep, BlockMask):
        if dropout_p > 0.0:
            raise ValueError("flex_attention has no attention dropout; pass sep [B] when dropout_p > 0")
        return _flex(q, k, v, sep)
    if torch.is_tensor(sep) and sep.dim() == 4:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=sep, dropout_p=dropout_p)
    from torch.nn.attention.bias import causal_lower_right

    B, L, K = q.size(0), q.size(2), k.size(2)
    offset = K - L
    if isinstance(sep, list):
        runs = sep
    else:
        sep = sep.reshape(-1)
        runs = sep_runs(sep.expand(B) if sep.numel() == 1 else sep, L)
    rows = []
    for b0, b1, s in runs:
        qb, kb, vb = q[b0:b1], k[b0:b1], v[b0:b1]
        parts = []
        if s > 0:  # Part A: bidirectional over the cache and Part A
            parts.append(F.scaled_dot_product_attention(qb[:, :, :s], kb[:, :, :offset + s], vb[:, :, :offset + s],
                                                        dropout_p=dropout_p))
        if s < L:  # Part B: everything up to itself
            parts.append(F.scaled_dot_product_attention(qb[:, :, s:], kb, vb, attn_mask=causal_lower_right(L - s, K),
                                                        dropout_p=dropout_p))
        rows.append(parts[0] if len(parts) == 1 else torch.cat(parts, dim=2))
    return rows[0] if len(rows) == 1 else torch.cat(rows, dim=0)


@dataclass
class LayerKVCache:
    """One layer's keys and values of the positions already processed (incremental decoding).

    ``k``/``v``: preallocated [B, np, capacity, D] buffers (this rank's heads) of which the first ``length``
    positions are filled; ``append`` writes the new positions in place and grows the buffers when full.
    """

    k: torch.Tensor | None = None
    v: torch.Tensor | None = None
    length: int = 0
    capacity_hint: int = 0

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k/v [B, np, L, D] after the cached positions; return all keys/values [B, np, M+L, D]."""
        B, np_, L, D = k.shape
        end = self.length + L
        if self.k is None or end > self.k.size(2):
            cap = max(end, self.capacity_hint, 2 * (self.k.size(2) if self.k is not None else 0))
            new_k = k.new_empty(B, np_, cap, D)
            new_v = v.new_empty(B, np_, cap, D)
            if self.length:
                new_k[:, :, :self.length] = self.k[:, :, :self.length]
                new_v[:, :, :self.length] = self.v[:, :, :self.length]
            self.k, self.v = new_k, new_v
        self.k[:, :, self.length:end] = k
        self.v[:, :, self.length:end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]

    def reorder_(self, batch_index: torch.Tensor, start: int) -> None:
        """In place, positions ``start..length`` of row i become those of row ``batch_index[i]``.

        Rows that ``batch_index`` maps onto each other must already agree on the positions before ``start``
        (beams of one context share its keys/values): only the positions after it are copied.
        """
        if self.k is None or self.length <= start:
            return
        idx = batch_index.to(self.k.device)
        self.k[:, :, start:self.length] = self.k[idx, :, start:self.length]
        self.v[:, :, start:self.length] = self.v[idx, :, start:self.length]


@dataclass
class KVCache:
    """Keys/values of every layer for incremental decoding: pass the same object to successive forwards.

    The first forward fills it with the context; each later forward feeds only the new positions, whose
    queries attend to all cached keys (plus the new ones, as ``attention_mask`` says for the last ``L``
    key columns). ``capacity`` preallocates that many positions per layer (grown on demand).
    """

    num_layers: int
    capacity: int = 0
    layers: list[LayerKVCache] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.layers:
            self.layers = [LayerKVCache(capacity_hint=self.capacity) for _ in range(self.num_layers)]

    @property
    def length(self) -> int:
        """Number of cached positions M."""
        return self.layers[0].length if self.layers else 0

    def select(self, batch_index: torch.Tensor) -> KVCache:
        """A new cache whose row i is row ``batch_index[i]`` of this one (beam reordering / expansion)."""
        layers = []
        for c in self.layers:
            if c.k is None:
                layers.append(LayerKVCache(capacity_hint=c.capacity_hint))
                continue
            idx = batch_index.to(c.k.device)
            layers.append(LayerKVCache(c.k.index_select(0, idx), c.v.index_select(0, idx), c.length,
                                       c.capacity_hint))
        return KVCache(self.num_layers, self.capacity, layers)

    def reorder_(self, batch_index: torch.Tensor, start: int) -> None:
        """``select(batch_index)`` in place for rows that agree on the positions before ``start``: a beam
        step copies the generated positions only, not the shared context."""
        for c in self.layers:
            c.reorder_(batch_index, start)


class SelfAttention(nn.Module):
    """Fused-QKV self-attention, optionally over a KV cache; heads split across TP ranks."""

    def __init__(self, config: GLMConfig, state: ParallelState, generator: torch.Generator | None) -> None:
        super().__init__()
        h, n = config.hidden_size, config.num_attention_heads
        self.state = state
        self.local_heads = divide(n, state.tp_size)
        self.head_dim = divide(h, n)
        self.attention_dropout = config.attention_dropout
        # [3h/p, h]: this rank's rows [Q_r; K_r; V_r] (stride 3, as GLM ``mpu/transformer.py``).
        self.query_key_value = ColumnParallelLinear(
            h, 3 * h, state, gather_output=False, stride=3, generator=generator,
            init_method=normal_init(config.init_method_std))
        self.dense = RowParallelLinear(
            h, h, state, input_is_parallel=True, generator=generator,
            init_method=scaled_normal_init(config.init_method_std, config.num_layers))
        self.output_dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, x: torch.Tensor, sep: Any, kv_cache: LayerKVCache | None = None) -> torch.Tensor:
        """x [B, L, h]; ``sep`` as ``attention_core`` takes it (the cache offset is the cache's length)."""
        B, L, _ = x.shape
        np_, D = self.local_heads, self.head_dim
        qkv = self.query_key_value(x)  # [B, L, 3*hp]
        qkv = qkv.view(B, L, 3, np_, D).permute(2, 0, 3, 1, 4)  # [3, B, np, L, D]
        q, k, v = qkv.unbind(0)  # each [B, np, L, D]
        if kv_cache is not None:
            k, v = kv_cache.append(k, v)  # [B, np, M+L, D]: cached positions, then this segment
        dropout_p = self.attention_dropout if self.training else 0.0
        if dropout_p > 0.0:
            # Heads differ per TP rank, so their dropout masks must too: use the per-rank tracker state.
            tracker = self.state.rng_tracker
            if not tracker.has(MODEL_PARALLEL_RNG):
                # Not seeded explicitly (mpu.random.model_parallel_seed): derive it from torch's seed.
                tracker.add(MODEL_PARALLEL_RNG, torch.initial_seed() + 2718 + self.state.tp_rank)
            with self.state.rng_tracker.fork(MODEL_PARALLEL_RNG, device=q.device):
                ctx = attention_core(q, k, v, sep, dropout_p)  # [B, np, L, D]
        else:
            ctx = attention_core(q, k, v, sep)  # [B, np, L, D]
        ctx = ctx.transpose(1, 2).reshape(B, L, np_ * D)  # [B, L, hp]
        return self.output_dropout(self.dense(ctx))  # [B, L, h]


class MLP(nn.Module):
    """h -> 4h (column parallel) -> tanh-GELU -> h (row parallel) -> dropout."""

    def __init__(self, config: GLMConfig, state: ParallelState, generator: torch.Generator | None) -> None:
        super().__init__()
        h, f = config.hidden_size, config.ffn_size
        self.dense_h_to_4h = ColumnParallelLinear(
            h, f, state, gather_output=False, generator=generator,
            init_method=normal_init(config.init_method_std))
        self.dense_4h_to_h = RowParallelLinear(
            f, h, state, input_is_parallel=True, generator=generator,
            init_method=scaled_normal_init(config.init_method_std, config.num_layers))
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.gelu(self.dense_h_to_4h(x), approximate="tanh")  # [B, L, 4h/p]
        return self.dropout(self.dense_4h_to_h(y))  # [B, L, h]


def _layer_norm(config: GLMConfig) -> nn.LayerNorm:
    ln = nn.LayerNorm(config.hidden_size, eps=config.layernorm_epsilon)
    for p in ln.parameters():
        p.model_parallel = False
    return ln


class TransformerLayer(nn.Module):
    """Pre-LN block: h + Attn(LN1(h)), then + MLP(LN2(.))."""

    def __init__(self, config: GLMConfig, state: ParallelState, generator: torch.Generator | None) -> None:
        super().__init__()
        self.input_layernorm = _layer_norm(config)
        self.attention = SelfAttention(config, state, generator)
        self.post_attention_layernorm = _layer_norm(config)
        self.mlp = MLP(config, state, generator)

    def forward(self, hidden: torch.Tensor, sep: Any, kv_cache: LayerKVCache | None = None) -> torch.Tensor:
        x = self.input_layernorm(hidden)
        hidden = hidden + self.attention(x, sep, kv_cache)
        return hidden + self.mlp(self.post_attention_layernorm(hidden))


def _embedding(rows: int, h: int, std: float, generator: torch.Generator | None) -> nn.Embedding:
    emb = nn.Embedding(rows, h)
    with torch.no_grad():
        emb.weight.copy_(torch.empty(rows, h).normal_(0.0, std, generator=generator))
    emb.weight.model_parallel = False
    return emb


class GLMTransformer(nn.Module):
    """Position tables, layers and final LayerNorm (GLM's ``GPT2ParallelTransformer``)."""

    def __init__(self, config: GLMConfig, state: ParallelState, generator: torch.Generator | None) -> None:
        super().__init__()
        self.config = config
        self.state = state
        h = config.hidden_size
        self.position_embeddings = _embedding(config.position_table_rows, h, config.init_method_std, generator)
        if config.block_position_encoding:
            self.block_position_embeddings = _embedding(config.position_table_rows, h, config.init_method_std,
                                                        generator)
        self.embedding_dropout = nn.Dropout(config.hidden_dropout)
        self.layers = nn.ModuleList(TransformerLayer(config, state, generator) for _ in range(config.num_layers))
        self.final_layernorm = _layer_norm(config)

    def forward(self, hidden: torch.Tensor, position_ids: torch.Tensor, sep: torch.Tensor,
                kv_cache: KVCache | None = None) -> torch.Tensor:
        """hidden [B, L, h] (word embeddings), position_ids [B, 2, L] (or [B, L] without block positions),
        ``sep`` [B] / one value (or a full bool mask [B, 1, L, >=K]) -> LN_f(h_L) [B, L, h]."""
        B, L, _ = hidden.shape
        offset = kv_cache.length if kv_cache is not None else 0
        attn = self._attention_input(sep.to(hidden.device), B, L, offset)
        if self.config.block_position_encoding:
            hidden = (hidden + self.position_embeddings(position_ids[:, 0])  # [B, L, h]
                      + self.block_position_embeddings(position_ids[:, 1]))
        else:
            hidden = hidden + self.position_embeddings(position_ids)
        hidden = self.embedding_dropout(hidden)

        n_layers = len(self.layers)
        # The KV cache is a decoding feature; checkpointing is a training one: never both.
        use_ckpt = (self.config.checkpoint_activations and torch.is_grad_enabled() and self.training
                    and kv_cache is None)
        chunk = self.config.checkpoint_num_layers if use_ckpt else 1
        for start in range(0, n_layers, chunk):
            end = min(start + chunk, n_layers)
            if use_ckpt:
                hidden = checkpoint_fn(self._run_layers(start, end, attn), hidden, rng_tracker=self.state.rng_tracker)
            else:
                hidden = self.layers[start](hidden, attn, kv_cache.layers[start] if kv_cache is not None else None)
        return self.final_layernorm(hidden)

    def _attention_input(self, sep: torch.Tensor, B: int, L: int, offset: int) -> Any:
        """What every layer's ``attention_core`` gets, built once for all layers: on CUDA a FlexAttention
        block mask (under attention dropout the runs ``sep_runs`` of ``sep``, read on the host here once, for
        the split SDPA path); on the CPU the bool mask [B, 1, L, K] of ``sep`` (``CPU_SEP_KERNEL``); a
        caller's full mask: its last K columns."""
        if sep.dim() > 1:
            return normalize_attention_mask(sep, L, offset + L)  # [B|1, 1, L, K]
        sep = sep.reshape(-1)
        if sep.numel() not in (1, B):
            raise ValueError(f"sep has {sep.numel()} values for a batch of {B} rows; expected one per row "
                             f"(the length of Part A) or one for all")
        sep = sep.expand(B)
        dropout_p = self.config.attention_dropout if self.training else 0.0
        if use_flex_attention(sep, dropout_p, L, self.config.hidden_size // self.config.num_attention_heads):
            return prefix_lm_block_mask(sep, offset, L, B)
        if not sep.is_cuda and CPU_SEP_KERNEL == "dense":
            return sep_attention_mask(sep, L, offset + L)  # [B, 1, L, K]
        return sep_runs(sep, L)

    def _run_layers(self, start: int, end: int, attn: Any):
        def run(hidden: torch.Tensor) -> torch.Tensor:
            for i in range(start, end):
                hidden = self.layers[i](hidden, attn)
            return hidden
        return run


class GLMModel(nn.Module):
    """GLM decoder with tied, vocab-parallel output logits.

    ``forward(input_ids [B, L], position_ids [B, 2, L], sep [B]) -> (logits [B, L, V/p] (or [B, L, V] if
    not parallel_output), [])``. ``sep``: the length of Part A per row (one value for all rows is broadcast);
    a full bool mask [B, 1, L, >=K] (True = attend; its last K columns are used) is accepted too, for
    callers whose rows are right-padded. The second result is an empty list: the place where GLM returned
    Transformer-XL memories, kept so that ``logits, _ = model(...)`` callers need no change (decoding uses
    ``kv_cache``; ``GLMConfig.max_memory_length`` is still read from checkpoints and ignored).
    ``kv_cache``: optional ``KVCache`` holding every layer's keys/values of M earlier positions; it is
    extended in place by this call's L positions (the cache offset), so incremental decoding feeds one new
    position per step; ``sep`` then counts from this call's first position (every cached key is visible
    to every query). Initialisation is drawn from a CPU generator seeded with
    ``init_seed`` (or ``generator``), identically for every TP size.
    ``logit_mask``: optional bool [B, L]; the output projection then runs on the True positions only and
    the logits are [N, V/p] (N = number of True entries, in row-major order, as ``x[logit_mask]``): the
    positions a loss scores (``loss_mask != 0``), one position per row for cloze scoring or the last step
    of decoding, or none (all False) when only the KV cache is wanted. Each row of logits is
    ``LN_f(h)[b, i] @ E^T``, the same as the full computation's row; the skipped positions cost nothing.
    """

    def __init__(self, config: GLMConfig, parallel_state: ParallelState | None = None, init_seed: int = 1234,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        state = parallel_state or ParallelState.single()
        config.validate(state.tp_size)
        self.config = config
        self.state = state
        if generator is None:
            generator = torch.Generator().manual_seed(init_seed)
        self.word_embeddings = VocabParallelEmbedding(
            config.vocab_size, config.hidden_size, state, init_method=normal_init(config.init_method_std),
            generator=generator)
        self.transformer = GLMTransformer(config, state, generator)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, sep: torch.Tensor | None = None,
                kv_cache: KVCache | None = None, logit_mask: torch.Tensor | None = None, *,
                attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        # Deprecated alias: the argument was called ``attention_mask`` (it always carried sep or a full mask);
        # kept until every caller says ``sep``.
        if attention_mask is not None:
            if sep is not None:
                raise ValueError("pass sep or its deprecated alias attention_mask, not both")
            sep = attention_mask
        if sep is None:
            raise ValueError("GLMModel.forward needs sep [B] (the length of Part A per row)")
        emb = self.word_embeddings(input_ids)  # [B, L, h]
        hidden = self.transformer(emb, position_ids, sep, kv_cache)  # [B, L, h]
        if logit_mask is not None:
            if logit_mask.shape != hidden.shape[:2]:
                raise ValueError(f"logit_mask has shape {tuple(logit_mask.shape)}; expected bool "
                                 f"{tuple(hidden.shape[:2])} (batch, sequence) like input_ids")
            # Only the scored positions reach the vocabulary projection (and its gradient): [N, h].
            hidden = hidden[logit_mask.to(hidden.device, torch.bool)]
        hidden = copy_to_tensor_parallel_region(hidden, self.state)
        logits = F.linear(hidden, self.word_embeddings.weight)  # [B, L, V/p] ([N, V/p] with logit_mask)
        if not self.config.parallel_output:
            logits = gather_from_tensor_parallel_region(logits, self.state)  # [B, L, V]
        return logits, []


def glm_lm_loss(logits: torch.Tensor, target: torch.Tensor, loss_mask: torch.Tensor,
                parallel_state: ParallelState | None = None) -> torch.Tensor:
    """sum(CE * loss_mask) / sum(loss_mask), CE from vocab-parallel logits [B, L, V/p] in fp32.

    ``logits`` may also be [N, V/p], one row per nonzero of ``loss_mask`` (from ``GLMModel(...,
    logit_mask=loss_mask != 0)``): the zero-weight positions, which add nothing to either sum, are then
    never computed. Returns 0 (with a graph) when the mask is empty.
    """
    state = parallel_state or ParallelState.single()
    if logits.dim() == 2:
        loss_mask = loss_mask.reshape(target.shape)
        scored = loss_mask != 0
        if logits.size(0) != int(scored.sum()):
            raise ValueError(f"logits have {logits.size(0)} rows but loss_mask has {int(scored.sum())} nonzero "
                             f"entries; pass logit_mask=loss_mask != 0 to the model")
        target, loss_mask = target[scored], loss_mask[scored]  # [N]
    losses = vocab_parallel_cross_entropy(logits.float(), target, state)  # [B, L]
    mask = loss_mask.reshape(losses.shape).float()
    total = mask.sum()
    weighted = (losses * mask).sum()
    return weighted / total if float(total) > 0 else weighted


def param_groups_for_weight_decay(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two optimizer groups: weights with decay; biases and LayerNorm parameters without.

    Parameters lacking ``model_parallel`` are marked replicated (``False``), as GLM does for grad clipping.
    """
    decay, no_decay = [], []
    for module in model.modules():
        is_ln = isinstance(module, nn.LayerNorm)
        for name, param in module.named_parameters(recurse=False):
            if not hasattr(param, "model_parallel"):
                param.model_parallel = False
            if not param.requires_grad:
                continue
            (no_decay if is_ln or name == "bias" else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_flops_per_token(config: GLMConfig, seq_length: int) -> float:
    """Training FLOPs per token: 72*L*h^2 + 12*L*s*h + 6*V*h (forward + backward)."""
    L, h = config.num_layers, config.hidden_size
    return 72.0 * L * h * h + 12.0 * L * seq_length * h + 6.0 * config.vocab_size * h


__all__ = ["GLMModel", "GLMTransformer", "KVCache", "LayerKVCache", "TransformerLayer", "SelfAttention", "MLP", "attention_core",
           "glm_lm_loss", "param_groups_for_weight_decay", "num_parameters", "model_flops_per_token"]
