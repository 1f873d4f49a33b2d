"""Scaled dot-product attention with an explicit boolean mask.

Shape legend: B batch, H heads, L query length, S key length, D head dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def attention(
    q_BHLD: torch.Tensor,
    k_BHSD: torch.Tensor,
    v_BHSD: torch.Tensor,
    mask_LS: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """SDPA over (B, H, L, D) tensors; `mask_LS` is boolean (True = may attend) or None (full attention).

    Returns:
        (B, H, L, D) attention output.
    """
    if mask_LS is not None and mask_LS.dtype != torch.bool:
        raise TypeError("attention masks are boolean (True = may attend); build them with argen.nn.masks")
    return F.scaled_dot_product_attention(q_BHLD, k_BHSD, v_BHSD, attn_mask=mask_LS, scale=scale)
