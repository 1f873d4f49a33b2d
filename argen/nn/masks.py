"""Attention masks from per-position group ids: the one helper every model uses.

Shape legend: L query positions, S key positions. Masks are boolean, True = may attend.

Rule: a query at (group g, stream s) sees a key at (group h, stream t) when
  * h < g and t == 0 (earlier groups of the context stream), or
  * h == g and t == s (its own group, same stream).
With a single stream this is block-causal: raster (group = position), VAR (group = scale), spiral groups.
EAR's two streams (context tokens on stream 0, [MASK] slots on stream 1) differ only in their ids.
"""

from __future__ import annotations

import torch


def group_mask(
    q_group_L: torch.Tensor,
    k_group_S: torch.Tensor | None = None,
    q_stream_L: torch.Tensor | None = None,
    k_stream_S: torch.Tensor | None = None,
) -> torch.Tensor:
    """Boolean (L, S) mask from group ids (and optional stream ids); True = may attend.

    Args:
        q_group_L: group id of each query position.
        k_group_S: group id of each key position (defaults to the query ids: self-attention).
        q_stream_L: stream id of each query position (default 0).
        k_stream_S: stream id of each key position (default: the query streams when keys default).
    """
    if k_group_S is None:
        k_group_S = q_group_L
        if k_stream_S is None:
            k_stream_S = q_stream_L
    if q_stream_L is None:
        q_stream_L = torch.zeros_like(q_group_L)
    if k_stream_S is None:
        k_stream_S = torch.zeros_like(k_group_S)
    qg, kg = q_group_L[:, None], k_group_S[None, :]
    qs, ks = q_stream_L[:, None], k_stream_S[None, :]
    return ((kg < qg) & (ks == 0)) | ((kg == qg) & (ks == qs))


def causal_mask(length: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Plain causal (L, L) mask: raster order is one group per position."""
    return group_mask(torch.arange(length, device=device))


def groups_from_sizes(
    sizes: list[int] | tuple[int, ...], device: torch.device | str | None = None
) -> torch.Tensor:
    """Group id per position for consecutive groups of the given sizes: [2, 3] -> [0, 0, 1, 1, 1]."""
    sizes_t = torch.as_tensor(list(sizes), device=device)
    return torch.repeat_interleave(torch.arange(len(sizes_t), device=device), sizes_t)
