"""nn.layers: the fast GELU equals torch's, row gather/scatter equal their per-element forms."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from argen.nn.layers import gather_rows, gelu_tanh, scatter_rows


def test_gelu_tanh_equals_torch_within_fp32_rounding() -> None:
    x = torch.randn(4096) * 4
    before = x.clone()
    with torch.no_grad():
        fast = gelu_tanh(x)  # the sigmoid form (fp32 CPU inference), computed in place in a new buffer
    assert torch.equal(x, before)  # the input is left alone
    torch.testing.assert_close(fast, F.gelu(x, approximate="tanh"), atol=2e-6, rtol=1e-6)
    x.requires_grad_(True)
    assert torch.equal(gelu_tanh(x), F.gelu(x, approximate="tanh"))  # autograd takes torch's own kernel


def test_rows_equal_gather_and_scatter() -> None:
    x, rows = torch.randn(3, 10, 5), torch.sort(torch.rand(3, 10).argsort(1)[:, :4], 1).values
    idx = rows[..., None].expand(-1, -1, 5)
    assert torch.equal(gather_rows(x, rows), torch.gather(x, 1, idx))
    src = torch.randn(3, 4, 5)
    assert torch.equal(scatter_rows(x, rows, src), x.scatter(1, idx, src))
    y = x.clone()
    assert scatter_rows(y, rows, src, inplace=True).data_ptr() == y.data_ptr()
    assert torch.equal(y, x.scatter(1, idx, src))
