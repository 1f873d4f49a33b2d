"""Fast inference paths equal the plain computations they replace (issue 26, bf16 sampling speed).

Each test holds the plain form as it was written before (the reference) and checks the fast one against it:
bit for bit where the arithmetic is the same, within the stated rounding where it is not.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from argen.nn.attention import additive_mask, attention
from argen.nn.kv_cache import KVCache
from argen.nn.layers import RMSNorm, SwiGLU, linear_gelu_tanh
from argen.nn.linear import Linear, _cpu_packs_bf16, packed_linear, packs
from argen.nn.rope import apply_rope, rope_table
from argen.sampling.logits import filter_logits


def _rope_plain(x_BLHD: torch.Tensor, table_LK2: torch.Tensor) -> torch.Tensor:
    """The real-valued rotation of interleaved pairs, computed in float32 (the form apply_rope replaced)."""
    b, length, h, d = x_BLHD.shape
    xs = x_BLHD.float().reshape(b, length, h, d // 2, 2)
    t = table_LK2.view(1, length, 1, d // 2, 2)
    out = torch.stack(
        [xs[..., 0] * t[..., 0] - xs[..., 1] * t[..., 1], xs[..., 1] * t[..., 0] + xs[..., 0] * t[..., 1]],
        dim=-1,
    )
    return out.flatten(3).type_as(x_BLHD)


def test_rope_complex_multiply_equals_the_real_rotation_bit_for_bit() -> None:
    torch.manual_seed(0)
    rows, cols = torch.tensor([-1, 0, 3, 7, 2]), torch.tensor([-1, 5, 1, 0, 6])  # row -1: class token
    table = rope_table(rows, cols, head_dim=16)
    for dtype in (torch.float32, torch.bfloat16):
        qkv = torch.randn(3, 5, 3, 4, 16).to(dtype)  # (B, L, q/k/v, H, D) as the fused projection gives it
        q, k = apply_rope(qkv[:, :, :2], table).unbind(2)  # both at once, from a strided view
        assert torch.equal(q, _rope_plain(qkv[:, :, 0], table))
        assert torch.equal(k, _rope_plain(qkv[:, :, 1], table))
        # the real formula (torch.compile's path; taken here for a table it cannot view as complex)
        strided = table.transpose(0, 1).contiguous().transpose(0, 1)
        assert torch.equal(apply_rope(qkv[:, :, 1], strided), _rope_plain(qkv[:, :, 1], table))
    assert not apply_rope(qkv[:, :1, :2], table[:1]).any()  # the class token's queries and keys are zero


def _same_but_last_bits(a: torch.Tensor, b: torch.Tensor) -> None:
    """bf16 results equal but for one rounding of a few elements (fp32 sums in another order)."""
    assert a.shape == b.shape and a.dtype == b.dtype
    torch.testing.assert_close(a, b, rtol=2**-7, atol=0)
    assert (a != b).sum() <= 0.01 * a.numel()


@torch.no_grad()
def test_packed_bf16_linear_equals_f_linear() -> None:
    torch.manual_seed(0)
    layer = Linear(48, 80).to(torch.bfloat16)
    for x in (
        torch.randn(4, 8, 48),  # (B, L, K)
        torch.randn(8, 4, 48).transpose(0, 1),  # strided rows
        torch.randn(1, 48),
        torch.randn(0, 48),
    ):
        x = x.to(torch.bfloat16)  # (F.linear of strided rows adds the bias after rounding: compare rows)
        _same_but_last_bits(layer(x), F.linear(x.contiguous(), layer.weight, layer.bias))
    x = torch.randn(6, 48, dtype=torch.bfloat16)
    assert packs(x, layer.weight) == _cpu_packs_bf16()  # packed on CPUs with bf16 units
    for rows in (slice(None, 32), slice(32, None)):  # slices of one weight, each packed on its own
        w = layer.weight[rows]
        assert torch.equal(packed_linear(x, w, None, layer), F.linear(x, w))  # no bias: bit for bit
    layer.weight.mul_(2)  # new weights (a load, a training step): packed again
    _same_but_last_bits(layer(x), F.linear(x, layer.weight, layer.bias))
    with torch.enable_grad():  # autograd and fp32: torch's own F.linear
        assert not packs(x, layer.weight.requires_grad_())
    assert not packs(x.float(), layer.float().weight)
    copy.deepcopy(layer)  # the packed copies live outside the module (opaque tensors do not copy)


def _filter_plain(logits_BLV: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Top-k by torch.topk, top-p by an index sort scattered back (the form filter_logits replaced)."""
    logits_BLV = logits_BLV.clone()
    if 0 < top_k < logits_BLV.shape[-1]:
        kth = torch.topk(logits_BLV, top_k, dim=-1).values[..., -1:]
        logits_BLV.masked_fill_(logits_BLV < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(logits_BLV, dim=-1, descending=False)
        remove_sorted = sorted_logits.softmax(dim=-1).cumsum(dim=-1) <= 1 - top_p
        remove_sorted[..., -1:] = False
        logits_BLV.masked_fill_(remove_sorted.scatter(-1, sorted_idx, remove_sorted), float("-inf"))
    return logits_BLV


def test_threshold_filters_equal_the_index_sort_and_keep_ties_together() -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 50, 512) * 3  # continuous values: no ties
    logits[0, 0, :100] = float("-inf")  # an already-masked row
    for top_k, top_p in [(0, 0.96), (100, 1.0), (100, 0.9), (600, 0.5), (1, 0.96), (0, 1e-6)]:
        assert torch.equal(filter_logits(logits, top_k, top_p), _filter_plain(logits, top_k, top_p))
    tied = torch.tensor([[[0.0, 1.0, 1.0, 2.0, 3.0]]])  # probabilities .03 .08 .08 .22 .59
    kept = filter_logits(tied, top_k=0, top_p=0.85).isfinite()  # removes at most .15: only one 1.0 fits
    assert kept.tolist() == [[[False, True, True, True, True]]]  # so both stay
    kept = filter_logits(tied, top_k=3, top_p=1.0).isfinite()
    assert kept.tolist() == [[[False, True, True, True, True]]]  # the 3rd largest is tied: 4 kept


def test_kv_cache_writes_a_run_of_positions_as_index_copy_does() -> None:
    k, v = torch.randn(2, 3, 4, 8), torch.randn(2, 3, 4, 8)  # fp32 into a bf16 cache: cast on the way
    by_slice, by_index = (KVCache(2, 3, 10, 8, torch.bfloat16, "cpu") for _ in range(2))
    for got, want in zip(
        by_slice.update(slice(3, 7), k, v), by_index.update(torch.arange(3, 7), k, v), strict=True
    ):
        assert torch.equal(got, want) and got[:, :, 3:7].any() and not got[:, :, 7:].any()


@torch.no_grad()
def test_activations_fused_into_packed_matmuls_are_as_close_to_fp32_as_separate_passes() -> None:
    torch.manual_seed(0)
    fc1, ffn = Linear(64, 256).to(torch.bfloat16), SwiGLU(64, 256).to(torch.bfloat16)
    x = torch.randn(2, 10, 64, dtype=torch.bfloat16)
    fused = {"gelu": linear_gelu_tanh(x, fc1), "swiglu": ffn(x)}
    plain = {  # the separate passes in bf16 (each rounded), and the same in fp32
        "gelu": F.gelu(F.linear(x, fc1.weight, fc1.bias), approximate="tanh"),
        "swiglu": F.linear(F.silu(F.linear(x, ffn.w1.weight)) * F.linear(x, ffn.w3.weight), ffn.w2.weight),
    }
    x32, f32 = x.float(), {k: v.float() for k, v in fc1.state_dict().items()}
    ref = {
        "gelu": F.gelu(F.linear(x32, f32["weight"], f32["bias"]), approximate="tanh"),
        "swiglu": copy.deepcopy(ffn).float()(x32),
    }
    for name, got in fused.items():
        assert got.dtype == torch.bfloat16
        scale = ref[name].abs().max()
        torch.testing.assert_close(got.float(), plain[name].float(), rtol=2**-6, atol=float(scale) * 2**-7)
        assert (got.float() - ref[name]).abs().max() <= (plain[name].float() - ref[name]).abs().max() * 1.01


def test_unsorted_topk_selects_the_sorted_topk_set() -> None:
    """ActVAR's router (sampling) and token gates take `sorted=False`: the same experts and tokens."""
    for x in (torch.zeros(8, 16), torch.randint(0, 3, (500, 16)).float(), torch.randn(64, 256)):
        for k in (1, 12, x.shape[1] * 4 // 5):
            a, b = (torch.topk(x, k, dim=1, sorted=s).indices.sort(1).values for s in (True, False))
            assert torch.equal(a, b)


def _rmsnorm_plain(x_BLD: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    xf = x_BLD.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).type_as(x_BLD) * weight


def test_rms_norm_function_equals_the_explicit_form() -> None:
    """RMSNorm's GPU path (`F.rms_norm`, fused there) computes the explicit form; the CPU runs that form."""
    norm = RMSNorm(384)
    torch.nn.init.uniform_(norm.weight, 0.5, 1.5)
    x = torch.randn(4, 9, 384, requires_grad=True) * 3

    def fused(x, w):
        return F.rms_norm(x, (384,), w, norm.eps)

    assert torch.equal(fused(x, norm.weight), _rmsnorm_plain(x, norm.weight, norm.eps))  # fp32: bit for bit
    (grad,) = torch.autograd.grad(fused(x, norm.weight).square().sum(), x)
    (want,) = torch.autograd.grad(_rmsnorm_plain(x, norm.weight, norm.eps).square().sum(), x)
    assert torch.equal(grad, want)
    w16, x16 = norm.weight.detach().to(torch.bfloat16), x.detach().to(torch.bfloat16)
    got, plain = fused(x16, w16), _rmsnorm_plain(x16, w16, norm.eps)  # bf16: one rounding less
    torch.testing.assert_close(got, plain, rtol=2**-7, atol=0)
    ref = _rmsnorm_plain(x16.float(), w16.float(), norm.eps)
    assert (got.float() - ref).abs().max() <= (plain.float() - ref).abs().max()
    for x_in, module in ((x, norm), (x16, copy.deepcopy(norm).to(torch.bfloat16)), (x16, norm)):  # CPU
        assert torch.equal(module(x_in), _rmsnorm_plain(x_in, module.weight, norm.eps))


def test_additive_mask_gives_sdpa_the_same_attention_as_its_boolean_mask() -> None:
    mask = torch.rand(5, 12) < 0.6
    mask[:, 0] = True  # every row sees a key
    for dtype in (torch.float32, torch.bfloat16):
        q, k, v = (torch.randn(2, 3, n, 8).to(dtype) for n in (5, 12, 12))
        assert torch.equal(attention(q, k, v, additive_mask(mask, dtype)), attention(q, k, v, mask))
