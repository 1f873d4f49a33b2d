"""Generic FLOP counters: torch's measured count equals the analytic building blocks (2 FLOPs per MAC)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from argen.models.flops import attention_flops, conv2d_flops, linear_flops, measured_flops


def test_linear_measured_equals_analytic():
    layer = torch.nn.Linear(48, 20)
    x = torch.randn(3, 7, 48)
    assert measured_flops(layer, x) == linear_flops(21, 48, 20) == 2 * 21 * 48 * 20


def test_conv2d_measured_equals_analytic():
    for stride, groups in ((1, 1), (2, 1), (1, 4)):
        conv = torch.nn.Conv2d(8, 12, 3, stride=stride, padding=1, groups=groups)
        y = conv(torch.randn(2, 8, 10, 10))
        count = measured_flops(conv, torch.randn(2, 8, 10, 10))
        assert count == conv2d_flops(y.shape[2], y.shape[3], 8, 12, 3, groups=groups, batch=2)


def test_attention_counted_on_cpu_and_matches_analytic():
    b, h, lq, lk, d = 2, 4, 10, 13, 16
    q, k, v = torch.randn(b, h, lq, d), torch.randn(b, h, lk, d), torch.randn(b, h, lk, d)
    mask = torch.rand(lq, lk) > 0.3
    for m in (None, mask):
        assert measured_flops(F.scaled_dot_product_attention, q, k, v, attn_mask=m) == b * attention_flops(
            lq, lk, h * d, h
        )
    # Explicit matmul attention gives the same count, so the CPU SDPA formula is consistent with bmm's.
    explicit = lambda q, k, v: torch.softmax(q @ k.transpose(-1, -2), -1) @ v
    assert measured_flops(explicit, q, k, v) == b * attention_flops(lq, lk, h * d, h)
