"""Attention masks and position ids for GLM's blank infilling (pure functions).

GLM's mask from ``sep`` (length of Part A): query row i may attend key column j iff
``j < sep`` (Part A is visible to everyone) or ``j <= i`` (causal). With ``mem`` cached memory columns
prepended, every memory column is visible. True = attend.
"""

from __future__ import annotations

import torch


def sep_attention_mask(sep: torch.Tensor, query_len: int, key_len: int | None = None,
                       device: torch.device | str | None = None) -> torch.Tensor:
    """Bool mask [B, 1, Lq, Lk] from ``sep`` [B] (or a scalar); ``Lk - Lq`` leading columns are memory."""
    key_len = query_len if key_len is None else key_len
    mem = key_len - query_len
    if mem < 0:
        raise ValueError(f"key_len={key_len} must be >= query_len={query_len}")
    device = sep.device if device is None else device
    sep = sep.reshape(-1).to(device)  # [B]
    rows = torch.arange(query_len, device=device).view(1, query_len, 1)  # [1, Lq, 1]
    cols = torch.arange(key_len, device=device).view(1, 1, key_len) - mem  # [1, 1, Lk], segment-relative
    mask = (cols <= rows) | (cols < sep.view(-1, 1, 1))  # [B, Lq, Lk]; memory columns have cols < 0
    return mask.unsqueeze(1)  # [B, 1, Lq, Lk]


def normalize_attention_mask(attention_mask: torch.Tensor, query_len: int, key_len: int) -> torch.Tensor:
    """Bool [B or 1, 1, Lq, Lk] from either ``sep`` ([B] / scalar) or a full mask [B, 1, Lq, >=Lk].

    A full mask keeps its last ``Lk`` key columns (as GLM slices it when memory is present); float masks
    count values > 0.5 as visible.
    """
    if attention_mask.dim() <= 1:
        return sep_attention_mask(attention_mask, query_len, key_len)
    if attention_mask.dim() != 4 or attention_mask.size(-2) != query_len or attention_mask.size(-1) < key_len:
        raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}; expected sep [B] or a full "
                         f"mask [B, 1, {query_len}, >={key_len}]")
    mask = attention_mask[..., -key_len:]
    return mask if mask.dtype == torch.bool else mask > 0.5


def causal_position_ids(batch_size: int, seq_len: int, offset: int = 0,
                        device: torch.device | str | None = None) -> torch.Tensor:
    """2D positions [B, 2, L] for plain left-to-right text: positions offset..offset+L-1, block positions 0."""
    pos = torch.arange(offset, offset + seq_len, device=device).expand(batch_size, seq_len)  # [B, L]
    return torch.stack([pos, torch.zeros_like(pos)], dim=1)  # [B, 2, L]


def blank_infilling_position_ids(source_length: int, spans: list[tuple[int, int]],
                                 device: torch.device | str | None = None) -> torch.Tensor:
    """2D positions [2, L] for Part A of ``source_length`` tokens followed by Part-B spans.

    ``spans`` lists (mask_position, span_length) in Part-B order; each span occupies ``span_length + 1``
    tokens (``[sop]`` + span). Part A: positions 0..sep-1, block positions 0. Part B: every token of a span
    has the position of its mask token and block positions 1..span_length+1 (the GLM paper, Figure 2).
    """
    pos = list(range(source_length))
    block = [0] * source_length
    for mask_pos, n in spans:
        pos += [mask_pos] * (n + 1)
        block += list(range(1, n + 2))
    return torch.tensor([pos, block], dtype=torch.long, device=device)  # [2, L]


def sep_runs(sep: torch.Tensor, query_len: int) -> list[tuple[int, int, int]]:
    """Runs ``(b0, b1, s)`` of consecutive rows ``b0..b1-1`` sharing ``sep`` clipped to ``0..query_len``.

    Rows of a run are sliced as views (no gather); a batch with one ``sep`` is one run, a batch of
    distinct ones is one run per row. Reads ``sep`` on the host (one sync on a GPU).
    """
    values = [min(max(int(s), 0), query_len) for s in sep.reshape(-1).tolist()]
    runs: list[tuple[int, int, int]] = []
    for b, s in enumerate(values):
        if runs and runs[-1][2] == s:
            runs[-1] = (runs[-1][0], b + 1, s)
        else:
            runs.append((b, b + 1, s))
    return runs


def prefix_lm_block_mask(sep: torch.Tensor, offset: int, query_len: int, batch_size: int):
    """FlexAttention ``BlockMask`` of GLM's mask for ``query_len`` queries after ``offset`` cached keys.

    ``mask_mod(b, h, q, kv) = kv < offset + sep[b]  or  kv <= offset + q`` over ``offset + query_len`` keys
    (segment-relative: every cached column is visible, as in ``sep_attention_mask``). Built once per
    forward and shared by every layer (heads broadcast: ``H=None``).
    """
    from torch.nn.attention.flex_attention import create_block_mask

    sep = sep.reshape(-1).expand(batch_size).to(torch.long)

    def mask_mod(b, h, q_idx, kv_idx):
        return (kv_idx < sep[b] + offset) | (kv_idx <= q_idx + offset)

    return create_block_mask(mask_mod, batch_size, None, query_len, offset + query_len, device=sep.device)
