"""Transformers model classes of an mglm GLM model (copied into every ``tools/export_hf.py`` folder).

Loaded with ``trust_remote_code=True`` through ``auto_map``: ``AutoModel`` -> ``MGLMModel`` (logits),
``AutoModelForSeq2SeqLM`` -> ``MGLMForConditionalGeneration`` (logits, loss, ``fill_blank``). Weights use GLM's
hub key names (``glm.word_embeddings.weight``, ``glm.transformer.layers.N...``).

The math is mglm's ``model/glm.py`` on one device (dims: B batch, L length, h hidden, n heads, D = h / n):

    x = word_emb(ids) + pos_emb(position_ids[:, 0]) + block_pos_emb(position_ids[:, 1])
    per layer:  a = LN_1(x);  x = x + Dense(softmax(Q K^T / sqrt(D), masked) V)
                x = x + W_2 gelu_tanh(W_1 LN_2(x))
    logits = LN_f(x) @ word_emb^T  (tied, no bias)

GELU is the tanh approximation, GLM's training definition (THUDM's hub code uses the exact erf GELU, which
is off GLM's own logits). ``query_key_value`` is one Linear(h, 3h) whose output is split into contiguous
thirds q, k, v. Mask: ``attention_mask`` is ``sep`` [B] (query i sees key j iff j < sep or j <= i: Part A
bidirectional, Part B causal) or a full mask [B, 1, L, L] (True / > 0.5 = attend). Without it every row is
causal (sep = 0); without ``position_ids`` positions are 0..L-1 and block positions 0.

This file needs only ``torch`` and ``transformers``; it must not import anything of the mglm repository.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_mglm import MGLMConfig


@dataclass
class MGLMOutput(ModelOutput):
    """``logits`` [B, L, V]; ``last_hidden_state`` [B, L, h] (after the final LayerNorm); ``loss`` with labels."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None


def attention_mask_matrix(attention_mask: torch.Tensor | None, batch: int, length: int,
                          device: torch.device) -> torch.Tensor:
    """Bool [B or 1, 1, L, L] (True = attend) from ``sep`` [B] / a scalar / None (sep 0) or a full mask."""
    if attention_mask is None:
        attention_mask = torch.zeros(batch, dtype=torch.long, device=device)
    if attention_mask.dim() <= 1:
        sep = attention_mask.reshape(-1, 1, 1).to(device)  # [B, 1, 1]
        rows = torch.arange(length, device=device).view(1, length, 1)
        cols = torch.arange(length, device=device).view(1, 1, length)
        return ((cols <= rows) | (cols < sep)).unsqueeze(1)  # [B, 1, L, L]
    mask = attention_mask[..., -length:].to(device)
    return mask if mask.dtype == torch.bool else mask > 0.5


class MGLMAttention(nn.Module):
    def __init__(self, config: MGLMConfig) -> None:
        super().__init__()
        h = config.hidden_size
        self.heads = config.num_attention_heads
        self.head_dim = h // self.heads
        self.dropout_p = config.attention_dropout_prob
        self.query_key_value = nn.Linear(h, 3 * h)
        self.dense = nn.Linear(h, h)
        self.output_dropout = nn.Dropout(config.output_dropout_prob)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, L, _ = x.shape
        qkv = self.query_key_value(x).view(B, L, 3, self.heads, self.head_dim)  # [B, L, 3, n, D]
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, n, L, D]
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                             dropout_p=self.dropout_p if self.training else 0.0)  # [B, n, L, D]
        ctx = ctx.transpose(1, 2).reshape(B, L, self.heads * self.head_dim)  # [B, L, h]
        return self.output_dropout(self.dense(ctx))


class MGLMMLP(nn.Module):
    def __init__(self, config: MGLMConfig) -> None:
        super().__init__()
        self.dense_h_to_4h = nn.Linear(config.hidden_size, config.intermediate_size)
        self.dense_4h_to_h = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.output_dropout_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.dense_4h_to_h(F.gelu(self.dense_h_to_4h(x), approximate="tanh")))


class MGLMLayer(nn.Module):
    def __init__(self, config: MGLMConfig) -> None:
        super().__init__()
        eps = config.layernorm_epsilon
        self.input_layernorm = nn.LayerNorm(config.hidden_size, eps=eps)
        self.attention = MGLMAttention(config)
        self.post_attention_layernorm = nn.LayerNorm(config.hidden_size, eps=eps)
        self.mlp = MGLMMLP(config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.input_layernorm(x), mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class MGLMTransformer(nn.Module):
    """Position tables (``max_sequence_length + 1`` rows with block positions), layers, final LayerNorm."""

    def __init__(self, config: MGLMConfig) -> None:
        super().__init__()
        rows = config.max_sequence_length + (1 if config.block_position_encoding else 0)
        self.block_position_encoding = config.block_position_encoding
        self.position_embeddings = nn.Embedding(rows, config.hidden_size)
        if config.block_position_encoding:
            self.block_position_embeddings = nn.Embedding(rows, config.hidden_size)
        self.embedding_dropout = nn.Dropout(config.embedding_dropout_prob)
        self.layers = nn.ModuleList(MGLMLayer(config) for _ in range(config.num_layers))
        self.final_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layernorm_epsilon)

    def forward(self, hidden: torch.Tensor, position_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.block_position_encoding:
            hidden = (hidden + self.position_embeddings(position_ids[:, 0])
                      + self.block_position_embeddings(position_ids[:, 1]))  # [B, L, h]
        else:
            hidden = hidden + self.position_embeddings(position_ids)
        hidden = self.embedding_dropout(hidden)
        for layer in self.layers:
            hidden = layer(hidden, mask)
        return self.final_layernorm(hidden)


class MGLMPreTrainedModel(PreTrainedModel):
    config_class = MGLMConfig
    base_model_prefix = "glm"
    supports_gradient_checkpointing = False

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class MGLMModel(MGLMPreTrainedModel):
    """GLM decoder: ``forward(input_ids [B, L], position_ids [B, 2, L], attention_mask sep [B] or [B, 1, L, L])
    -> MGLMOutput(logits [B, L, V], last_hidden_state)``."""

    def __init__(self, config: MGLMConfig) -> None:
        super().__init__(config)
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.transformer = MGLMTransformer(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.word_embeddings = value

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, return_dict: bool | None = None,
                **kwargs) -> MGLMOutput:
        B, L = input_ids.shape
        if position_ids is None:
            pos = torch.arange(L, device=input_ids.device).expand(B, L)  # [B, L]
            position_ids = torch.stack([pos, torch.zeros_like(pos)], dim=1) if self.config.block_position_encoding \
                else pos
        mask = attention_mask_matrix(attention_mask, B, L, input_ids.device)
        hidden = self.transformer(self.word_embeddings(input_ids), position_ids, mask)  # [B, L, h]
        logits = F.linear(hidden, self.word_embeddings.weight)  # [B, L, V]
        return MGLMOutput(logits=logits, last_hidden_state=hidden)


class MGLMForConditionalGeneration(MGLMPreTrainedModel):
    """``MGLMModel`` under ``glm`` with a loss (``labels`` [B, L], -100 ignored, target of position t is
    ``labels[:, t]``: GLM's Part-B targets are aligned with its inputs) and ``fill_blank``."""

    def __init__(self, config: MGLMConfig) -> None:
        super().__init__(config)
        self.glm = MGLMModel(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.glm.word_embeddings

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                return_dict: bool | None = None, **kwargs) -> MGLMOutput:
        out = self.glm(input_ids, position_ids, attention_mask)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(out.logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100)
        return MGLMOutput(loss=loss, logits=out.logits, last_hidden_state=out.last_hidden_state)

    # ------------------------------------------------------------------------------ blank filling
    def _blank_log_probs(self, context: list[int], mask_position: int, spans: list[list[int]]) -> torch.Tensor:
        """log softmax [R, V] of the next token after ``[sop] + span`` for each span (one forward, no cache)."""
        n, device = len(context), self.glm.word_embeddings.weight.device
        rows, positions = [], []
        for span in spans:
            tokens = context + [self.config.sop_token_id] + span
            pos = list(range(n)) + [mask_position] * (len(span) + 1)
            block = [0] * n + list(range(1, len(span) + 2))
            rows.append(tokens)
            positions.append([pos, block])
        ids = torch.tensor(rows, device=device)  # [R, n + 1 + s]
        sep = torch.full((len(spans),), n, device=device)
        logits = self.glm(ids, torch.tensor(positions, device=device), sep).logits[:, -1].float()  # [R, V]
        limit = self.config.generatable_vocab_size
        if limit is not None and limit < logits.size(-1):
            logits[:, limit:] = float("-inf")  # embedding rows past the tokenizer: vocabulary padding
        if self.config.banned_token_ids:
            logits[:, self.config.banned_token_ids] = float("-inf")  # command tokens inside a span
        return F.log_softmax(logits, dim=-1)

    @torch.no_grad()
    def fill_blank(self, input_ids, mask_position: int | None = None, max_new_tokens: int = 64,
                   num_beams: int = 1, length_penalty: float = 1.0) -> list[int]:
        """The tokens GLM writes into one blank of ``input_ids`` (a context: ``[CLS] text-with-[MASK] <eos>``).

        Part A is the context (bidirectional); the blank is decoded from ``[sop]`` at the mask's position with
        block positions 1, 2, ...; it ends at ``<|endofpiece|>`` / ``<|endoftext|>`` (not returned) or after
        ``max_new_tokens``. Greedy when ``num_beams == 1``; else beam search: at each step the
        ``2 * num_beams`` best (beam, token) pairs by summed log-probability; an end token among the first
        ``num_beams`` closes a hypothesis scored ``logprob / length ** length_penalty`` (length: the tokens before
        the end token); search stops when ``num_beams`` hypotheses exist and the step's best candidate, divided
        by (tokens before the step) ** length_penalty, cannot beat the worst (GLM's ``BeamSearchScorer``). Recomputes the whole sequence
        at every step (no cache): meant for checks and small inputs.
        """
        context = [int(t) for t in torch.as_tensor(input_ids).reshape(-1).tolist()]
        if mask_position is None:
            found = [i for i, t in enumerate(context) if t in self.config.mask_token_ids]
            if not found:
                raise ValueError(f"input_ids hold no mask token {self.config.mask_token_ids}")
            mask_position = found[0]
        ends = set(self.config.end_token_ids)
        was_training = self.training
        self.eval()
        try:
            if num_beams <= 1:
                span: list[int] = []
                for _ in range(max_new_tokens):
                    token = int(self._blank_log_probs(context, mask_position, [span])[0].argmax())
                    if token in ends:
                        break
                    span.append(token)
                return span
            return self._beam(context, mask_position, max_new_tokens, num_beams, length_penalty, ends)
        finally:
            self.train(was_training)

    def _beam(self, context: list[int], mask_position: int, max_new_tokens: int, num_beams: int,
              length_penalty: float, ends: set[int]) -> list[int]:
        beams: list[tuple[float, list[int]]] = [(0.0, [])]
        finished: list[tuple[float, list[int]]] = []  # (normalised score, tokens), best first

        def add(logprob: float, tokens: list[int], length: int) -> None:
            finished.append((logprob / (max(length, 1) ** length_penalty), tokens))
            finished.sort(key=lambda x: -x[0])
            del finished[num_beams:]

        for step in range(max_new_tokens):
            log_probs = self._blank_log_probs(context, mask_position, [b[1] for b in beams]).double()  # [R, V]
            V = log_probs.size(-1)
            total = (torch.tensor([b[0] for b in beams], dtype=torch.float64).view(-1, 1) + log_probs).view(-1)
            top_s, top_i = total.topk(min(2 * num_beams, total.numel()))
            running: list[tuple[float, list[int]]] = []
            for rank, (s, i) in enumerate(zip(top_s.tolist(), top_i.tolist(), strict=True)):
                if s == float("-inf"):
                    break
                src, token = divmod(i, V)
                if token in ends:
                    if rank < num_beams:
                        add(s, beams[src][1], step)  # length = the tokens before the end token (GLM)
                else:
                    running.append((s, beams[src][1] + [token]))
                if len(running) == num_beams:
                    break
            best = top_s[0].item()  # the best candidate, an end token's included (GLM's is_done)
            if len(finished) >= num_beams and (best == float("-inf")
                                               or finished[-1][0] >= best / (max(step, 1) ** length_penalty)):
                return finished[0][1]
            beams = running
        for s, tokens in beams:
            add(s, tokens, len(tokens))
        return finished[0][1] if finished else []


__all__ = ["MGLMModel", "MGLMForConditionalGeneration", "MGLMPreTrainedModel", "MGLMOutput"]
