"""`Linear`: an nn.Linear whose bf16 inference on a CPU with bf16 matrix units runs on a prepacked weight.

Shape legend: N rows (every leading dim), K input features, O output features.

A bf16 `F.linear` on a CPU hands oneDNN the plain (O, K) weight, which it lays out for its kernels on every
call; at the row counts of a cached decoding pass (N = 32-128) that costs as much as the multiply. Packed
once into oneDNN's layout (`torch.ops.mkldnn._reorder_linear_weight`) and multiplied with
`_linear_pointwise`, the same products run 1.4-1.8x faster at N = 32-64 and 1.05-1.2x at N >= 512 (Xeon
with AMX-BF16, one thread). Results are F.linear's: bit for bit without a bias; with one, a rare element
(2 of 8192 in one shape tried) differs by one bf16 rounding (fp32 sums in another order;
`tests/test_fast_paths.py`). The same kernels apply an activation (GELU, SiLU) or a product to the fp32
sums before their rounding, which saves a separate bf16 pass (`argen.nn.layers.linear_gelu_tanh`,
`SwiGLU`). The packed copy is cached per module that owns the weight, keyed by the weight and its version,
so loading or training new weights repacks. Everywhere else (autograd, fp32, GPU, torch.compile, CPUs
without bf16 units, where oneDNN would emulate bf16) it is `F.linear`.
"""

from __future__ import annotations

import functools
import weakref

import torch
import torch.nn.functional as F
from torch import nn

# owner module -> {(address, shape): (weakref to the weight or the tensor it views, version, packed copy)},
# apart from the module so that copying, pickling or saving it never meets the opaque packed tensors
_PACKED: weakref.WeakKeyDictionary[nn.Module, dict] = weakref.WeakKeyDictionary()


@functools.cache
def _cpu_packs_bf16() -> bool:
    """Whether this CPU runs bf16 matmuls natively (AMX or AVX512-BF16) through an available oneDNN."""
    cpu = torch.cpu
    native = (
        getattr(cpu, "_is_amx_tile_supported", lambda: False)()
        or getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
    )
    return native and torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def packs(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether `packed_linear(x, weight, ...)` takes the prepacked path."""
    return (
        x.dtype is torch.bfloat16
        and weight.dtype is torch.bfloat16
        and not torch.is_grad_enabled()
        and x.is_cpu
        and x.numel() > 0
        and not weight.is_inference()  # inference tensors have no version to key the cache by
        and not torch.compiler.is_compiling()
        and torch.backends.mkldnn.enabled
        and _cpu_packs_bf16()
    )


def _packed(weight_OK: torch.Tensor, owner: nn.Module, rows: int) -> torch.Tensor:
    """The packed copy of `weight_OK` (packed now when it is new or was written since)."""
    cache = _PACKED.setdefault(owner, {})
    key, base = (weight_OK.data_ptr(), weight_OK.shape), weight_OK._base
    base = weight_OK if base is None else base
    entry = cache.get(key)
    if entry is None or entry[0]() is not base or entry[1] != weight_OK._version:
        packed = torch.ops.mkldnn._reorder_linear_weight(weight_OK.contiguous(), rows)  # rows: a hint
        entry = cache[key] = (weakref.ref(base), weight_OK._version, packed)
    return entry[2]


def packed_linear(
    x_NK: torch.Tensor,
    weight_OK: torch.Tensor,
    bias_O: torch.Tensor | None,
    owner: nn.Module,
    post_op: str = "none",
    algorithm: str = "",
    other_NO: torch.Tensor | None = None,
) -> torch.Tensor:
    """`F.linear(x, weight, bias)` for (..., K) inputs, prepacked where `packs` says so.

    Args:
        owner: the module holding `weight_OK` (or the tensor it is a slice of); its cache of packed
            weights, one per (storage offset, shape) of the slices multiplied.
        post_op, algorithm: an elementwise function oneDNN applies to the fp32 sums before their one
            rounding to bf16 ("gelu" with "tanh", "swish" = SiLU), or "mul": the product with `other_NO`
            (..., O). Only on the packed path: the caller checks `packs` first.
    """
    if not packs(x_NK, weight_OK):
        if post_op != "none":
            raise ValueError(f"post_op {post_op!r} runs on the packed path only (check `packs` first)")
        return F.linear(x_NK, weight_OK, bias_O)
    # the packed kernel reads its input as a contiguous matrix (a strided one gives wrong rows)
    x2_NK = x_NK.reshape(-1, x_NK.shape[-1]).contiguous()
    packed = _packed(weight_OK, owner, len(x2_NK))
    if post_op == "mul":
        other = other_NO.reshape(len(x2_NK), -1).contiguous()
        y = torch.ops.mkldnn._linear_pointwise.binary(x2_NK, other, packed, bias_O, "mul")
    else:
        y = torch.ops.mkldnn._linear_pointwise(x2_NK, packed, bias_O, post_op, [], algorithm)
    return y.view(*x_NK.shape[:-1], weight_OK.shape[0])


class Linear(nn.Linear):
    """nn.Linear (same parameters, state dict and init) through `packed_linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return packed_linear(x, self.weight, self.bias, self)
