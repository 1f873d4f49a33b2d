"""Scaled dot-product attention with an explicit boolean mask, and a chunked form for block-causal masks.

Shape legend: B batch, H heads, L query length, S key length, D head dim, n rows or keys of one chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Chunk:
    """Query rows [begin, end) attend to `keys` (a prefix length, or an index of key columns) under `mask_nk`
    (None = every one of those keys)."""

    begin: int
    end: int
    keys: int | torch.Tensor
    mask_nk: torch.Tensor | None


@dataclass(frozen=True)
class ChunkedMask:
    """A boolean (L, S) mask split into row chunks, each computed over only the keys one of its rows may see.

    Block-causal masks (VAR's scales, EAR's step groups, raster's positions) leave most of each row's keys
    hidden; SDPA with the full mask still computes them. The chunked form computes 37% (VAR's 680 tokens,
    raster) to 63% (EAR's two streams) fewer attention scores and gives the same output
    (`tests/test_attention.py`). Build it once per teacher-forcing forward with `chunk_mask`, outside the
    layers.
    """

    mask_LS: torch.Tensor
    chunks: tuple[Chunk, ...]

    @property
    def shape(self) -> torch.Size:
        return self.mask_LS.shape

    def to(self, device: torch.device | str) -> ChunkedMask:
        def move(t):
            return t.to(device) if isinstance(t, torch.Tensor) else t

        chunks = tuple(Chunk(c.begin, c.end, move(c.keys), move(c.mask_nk)) for c in self.chunks)
        return ChunkedMask(self.mask_LS.to(device), chunks)


def chunk_mask(
    mask_LS: torch.Tensor, min_rows: int = 64, max_visible: float = 0.85
) -> torch.Tensor | ChunkedMask:
    """`mask_LS` split into chunks of consecutive rows (at least `min_rows`, cut where the row pattern
    changes); the plain mask back when the chunks would still compute over `max_visible` of all scores."""
    m = mask_LS.cpu()
    L, S = m.shape
    changes = (m[1:] != m[:-1]).any(1).nonzero().squeeze(1) + 1
    starts, begin = [], 0
    for s in changes.tolist():
        if s - begin >= min_rows:
            starts.append(begin)
            begin = s
    starts.append(begin)
    chunks, computed = [], 0
    for b, e in zip(starts, [*starts[1:], L], strict=True):
        cols = m[b:e].any(0).nonzero().squeeze(1)
        if len(cols) == 0:  # rows that see nothing: keep SDPA's own behaviour for them
            return mask_LS
        n = len(cols)
        keys: int | torch.Tensor = n if int(cols[-1]) == n - 1 else cols
        sub = m[b:e][:, cols]
        chunks.append(Chunk(b, e, keys, None if bool(sub.all()) else sub))
        computed += (e - b) * n
    if computed > max_visible * L * S:
        return mask_LS
    return ChunkedMask(mask_LS, tuple(chunks)).to(mask_LS.device)


def additive_mask(mask_LS: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Boolean (L, S) `mask_LS` as the additive mask SDPA makes of a boolean one (0 = may attend, -inf =
    not), in the queries' `dtype`: made once per cached pass for all its layers instead of by SDPA in each
    (three ops a layer, 7% of a raster pass's ops, each a kernel launch on a GPU). Same attention output."""
    zeros_LS = torch.zeros(mask_LS.shape, dtype=dtype, device=mask_LS.device)
    return zeros_LS.masked_fill_(~mask_LS, float("-inf"))


def attention(
    q_BHLD: torch.Tensor,
    k_BHSD: torch.Tensor,
    v_BHSD: torch.Tensor,
    mask_LS: torch.Tensor | ChunkedMask | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """SDPA over (B, H, L, D) tensors; `mask_LS` is boolean (True = may attend), its `additive_mask`, a
    `ChunkedMask`, or None (full attention).

    Returns:
        (B, H, L, D) attention output.
    """
    if isinstance(mask_LS, ChunkedMask):
        outs = []
        for c in mask_LS.chunks:
            if isinstance(c.keys, int):
                k_BHnD, v_BHnD = k_BHSD[:, :, : c.keys], v_BHSD[:, :, : c.keys]
            else:
                k_BHnD, v_BHnD = k_BHSD.index_select(2, c.keys), v_BHSD.index_select(2, c.keys)
            q_BHnD = q_BHLD[:, :, c.begin : c.end]
            outs.append(
                F.scaled_dot_product_attention(q_BHnD, k_BHnD, v_BHnD, attn_mask=c.mask_nk, scale=scale)
            )
        return torch.cat(outs, dim=2)
    if mask_LS is not None and mask_LS.dtype != torch.bool and mask_LS.dtype != q_BHLD.dtype:
        raise TypeError(
            "attention masks are boolean (True = may attend; build them with argen.nn.masks) or their "
            "additive_mask in the queries' dtype"
        )
    return F.scaled_dot_product_attention(q_BHLD, k_BHSD, v_BHSD, attn_mask=mask_LS, scale=scale)
