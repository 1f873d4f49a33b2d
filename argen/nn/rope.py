"""2D rotary position embedding (LlamaGen/EAR layout), built from explicit (row, col) per position.

Shape legend: B batch, L positions, H heads, D head dim, K = D/2 rotary pairs.

Each head's D/2 rotary pairs are split in two: the first D/4 pairs rotate with the row, the last D/4 with
the column; frequencies are `base ** (-2i / (D/2))` for i < D/4, pairs are interleaved (x[2k], x[2k+1]).
A position with row < 0 is a class token: its table row is all zeros (cos = sin = 0), as in the official
LlamaGen/EAR tables, which zeroes the class token's queries and keys.
"""

from __future__ import annotations

import torch

CLS_ROW = -1  # row id marking a class-token position


def rope_frequencies(
    head_dim: int, base: float = 10000.0, device: torch.device | str | None = None
) -> torch.Tensor:
    """(D/4,) float32 angular frequencies shared by the row and the column halves."""
    if head_dim % 4:
        raise ValueError(f"2D RoPE needs a head dim divisible by 4, got {head_dim}; change dim or n_head")
    half = head_dim // 2
    exps = torch.arange(0, half, 2, device=device)[: half // 2].float() / half
    return 1.0 / (base**exps)


def rope_table(
    rows_L: torch.Tensor, cols_L: torch.Tensor, head_dim: int, base: float = 10000.0
) -> torch.Tensor:
    """(L, D/2, 2) cos/sin table for cells (rows_L, cols_L); rows < 0 give an all-zero row (class token)."""
    freqs_F = rope_frequencies(head_dim, base, rows_L.device)
    is_cls_L = rows_L < 0
    r = torch.where(is_cls_L, 0, rows_L).float()
    c = torch.where(is_cls_L, 0, cols_L).float()
    angle_LK = torch.cat([torch.outer(r, freqs_F), torch.outer(c, freqs_F)], dim=-1)
    table = torch.stack([torch.cos(angle_LK), torch.sin(angle_LK)], dim=-1)
    return table.masked_fill(is_cls_L[:, None, None], 0.0)


def apply_rope(x_BLxD: torch.Tensor, table_LK2: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs of `x_BLxD` (B, L, ..., D: any dims between L and D, e.g. (2, H) for queries
    and keys at once) by the per-position table, computed in float32.

    Eager: one complex multiply per element ((x0 + i x1)(cos + i sin) = the rotation, rounded exactly as
    the real formula: products, then one sum each), 5-8x faster on CPU than the real formula's eight
    strided passes plus a stack. Under torch.compile: the real formula, which inductor fuses (it compiles
    complex tensors poorly).
    """
    length, d = x_BLxD.shape[1], x_BLxD.shape[-1]
    inner = (1,) * (x_BLxD.dim() - 3)
    xs = x_BLxD.float().unflatten(-1, (d // 2, 2))
    if torch.compiler.is_compiling() or not _complex_viewable(xs) or not table_LK2.is_contiguous():
        x0, x1 = xs.unbind(-1)
        cos, sin = table_LK2.view(1, length, *inner, d // 2, 2).unbind(-1)
        return torch.stack([x0 * cos - x1 * sin, x1 * cos + x0 * sin], dim=-1).flatten(-2).type_as(x_BLxD)
    rot = torch.view_as_complex(table_LK2).view(1, length, *inner, d // 2)
    return torch.view_as_real(torch.view_as_complex(xs) * rot).flatten(-2).type_as(x_BLxD)


def _complex_viewable(x: torch.Tensor) -> bool:
    """Whether `torch.view_as_complex` takes (..., 2) `x` as it is (pairs adjacent, complex-aligned)."""
    return x.stride(-1) == 1 and x.storage_offset() % 2 == 0 and all(s % 2 == 0 for s in x.stride()[:-1])
