"""Static key/value cache: preallocated, written at explicit positions, never grown with torch.cat.

Shape legend: B batch, H heads, S cache length, L positions written, D head dim.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

# cache positions written by one pass: an index tensor, or a slice for a run of positions
Positions = torch.Tensor | slice


class KVCache(nn.Module):
    """One attention layer's cache. Buffers are non-persistent: they never reach a state dict."""

    def __init__(
        self,
        batch: int,
        heads: int,
        max_len: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device | str,
    ) -> None:
        super().__init__()
        shape = (batch, heads, max_len, head_dim)
        self.register_buffer("k_BHSD", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v_BHSD", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(
        self, pos_L: Positions, k_BHLD: torch.Tensor, v_BHLD: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write keys/values at cache positions `pos_L` and return the whole cache (B, H, S, D).

        `pos_L` is an index tensor, or a slice when the positions are a run (every sampler's are): a plain
        copy, 2.5-4x faster on CPU than `index_copy_` at the sizes of a cached pass.
        """
        if isinstance(pos_L, slice):
            self.k_BHSD[:, :, pos_L].copy_(k_BHLD)
            self.v_BHSD[:, :, pos_L].copy_(v_BHLD)
        else:
            self.k_BHSD.index_copy_(2, pos_L, k_BHLD.to(self.k_BHSD.dtype))
            self.v_BHSD.index_copy_(2, pos_L, v_BHLD.to(self.v_BHSD.dtype))
        return self.k_BHSD, self.v_BHSD


@contextmanager
def kv_caches(
    layers: Iterable[nn.Module],
    batch: int,
    heads: int,
    max_len: int,
    head_dim: int,
    dtype: torch.dtype,
    device: torch.device | str,
) -> Iterator[None]:
    """Attach a fresh `KVCache` as `layer.cache` to each attention layer for the duration of the block."""
    layers = list(layers)
    for layer in layers:
        layer.cache = KVCache(batch, heads, max_len, head_dim, dtype, device)
    try:
        yield
    finally:
        for layer in layers:
            layer.cache = None
