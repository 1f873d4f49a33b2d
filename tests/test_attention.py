"""nn.attention: a block-causal mask's chunked form gives masked attention's output and gradients."""

from __future__ import annotations

import pytest
import torch

from argen.models.gpt import GPT, gpt_config
from argen.models.var import VAR, var_config
from argen.nn.attention import ChunkedMask, attention, chunk_mask
from argen.nn.masks import causal_mask, group_mask
from argen.orders import build_order


def _masks() -> dict[str, torch.Tensor]:
    var = VAR(var_config("fmnist", depth=1, width=32, heads=2))
    ear = GPT(gpt_config("fmnist_s", dim=32, n_layer=1, n_head=2))
    order = build_order(ear.config.order, ear.config.grid, ear.config.schedule)
    _, _, _, groups, streams = ear.teacher_forcing_layout(torch.zeros(1, 256, dtype=torch.long), order)
    return {
        "var": var.block_causal_mask(680),
        "ear": group_mask(groups, None, streams),
        "raster": causal_mask(257),
    }


@pytest.mark.parametrize("name", ["var", "ear", "raster"])
def test_chunked_attention_equals_masked(name: str) -> None:
    mask = _masks()[name]
    plan = chunk_mask(mask)
    assert isinstance(plan, ChunkedMask)
    computed = sum(
        (c.end - c.begin) * (c.keys if isinstance(c.keys, int) else len(c.keys)) for c in plan.chunks
    )
    assert computed < 0.85 * mask.numel()  # the point of chunking: hidden keys are not computed
    L = mask.shape[0]
    q, k, v = (torch.randn(2, 2, L, 16, dtype=torch.float64, requires_grad=True) for _ in range(3))
    full = attention(q, k, v, mask, scale=0.3)
    grads = torch.autograd.grad(full.square().sum(), (q, k, v))
    chunked = attention(q, k, v, plan, scale=0.3)
    torch.testing.assert_close(chunked, full, rtol=1e-10, atol=1e-10)
    for g_full, g_chunk in zip(grads, torch.autograd.grad(chunked.square().sum(), (q, k, v)), strict=True):
        torch.testing.assert_close(g_chunk, g_full, rtol=1e-10, atol=1e-10)


def test_dense_masks_stay_plain() -> None:
    full = torch.ones(100, 100, dtype=torch.bool)
    assert chunk_mask(full) is full
