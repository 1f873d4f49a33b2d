"""Transformer building blocks shared by the models: RMSNorm, SwiGLU, label embedder, AdaLN modulation.

Shape legend: B batch, L positions, D width, F SwiGLU hidden width.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from argen.nn.linear import Linear, packed_linear, packs


def to_weight_dtype(x: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """`x` cast to the dtype of `module`'s weights: what every model does to the floats that come in at its
    boundary (images, latents), so a bf16 model takes fp32 inputs and the other way round. Under autocast
    the weights stay fp32 and this is a no-op."""
    return x.to(next(module.parameters()).dtype)


def swiglu_hidden(dim: int, multiple_of: int = 256) -> int:
    """LlamaGen's SwiGLU width: int(2 * 4d / 3) rounded up to a multiple of `multiple_of`."""
    hidden = int(2 * (4 * dim) / 3)
    return -(-hidden // multiple_of) * multiple_of


class Mods(NamedTuple):
    """AdaLN(-Zero) modulation of one transformer block, each (B, 1, D): the gates, scales and shifts of its
    attention (1) and FFN (2) branches, in the order the official VAR / EAR modulation Linear emits them."""

    gamma1: torch.Tensor
    gamma2: torch.Tensor
    scale1: torch.Tensor
    scale2: torch.Tensor
    shift1: torch.Tensor
    shift2: torch.Tensor


def block_mods(ada_out: torch.Tensor, dim: int) -> Mods:
    """Split a modulation Linear's output, (B, 6D) or (B, 1, 6, D), into `Mods`."""
    return Mods(*ada_out.view(-1, 1, 6, dim).unbind(2))


def modulate(h_BLD: torch.Tensor, scale_B1D: torch.Tensor, shift_B1D: torch.Tensor) -> torch.Tensor:
    """AdaLN modulation of a normalised input: h * (1 + scale) + shift."""
    return h_BLD.mul(scale_B1D.add(1)).add_(shift_B1D)


_GELU_2C = 2 * math.sqrt(2 / math.pi)


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GELU, tanh approximation (VAR's FFN activation).

    fp32 CPU inference computes it as x * sigmoid(2c (x + 0.044715 x^3)), the same function
    (0.5 (1 + tanh z) = sigmoid(2z)) within fp32 rounding (max abs difference 5e-7 on N(0, 4) inputs), in
    one buffer: at VAR's FFN sizes the activation is memory-bound, and five in-place passes over one new
    tensor took 0.5-0.75 of torch's kernel's time on this project's AVX2 machine (and of the same formula
    allocating a tensor per operation). Elsewhere (autograd, bf16, GPU) it is
    `F.gelu(x, approximate="tanh")`. `x` is never modified.
    """
    if x.device.type != "cpu" or x.dtype != torch.float32 or (torch.is_grad_enabled() and x.requires_grad):
        return F.gelu(x, approximate="tanh")
    s = x * x
    s.mul_(_GELU_2C * 0.044715).add_(_GELU_2C).mul_(x).sigmoid_()
    return s.mul_(x)


def linear_gelu_tanh(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    """`gelu_tanh(layer(x))`; on the prepacked path (bf16 CPU inference, `argen.nn.linear`) the GELU runs
    inside the matmul kernel on the fp32 sums before their one rounding to bf16: 2.3x faster than a
    separate pass (torch's bf16 tanh-GELU is slow) and within one bf16 rounding of it (closer to fp32)."""
    if packs(x, layer.weight):
        return packed_linear(x, layer.weight, layer.bias, layer, "gelu", "tanh")
    return gelu_tanh(layer(x))


def _flat_rows(rows_Bn: torch.Tensor, length: int) -> torch.Tensor:
    """(B * n,) row indices into a (B * L, D) view."""
    offsets_B1 = torch.arange(rows_Bn.shape[0], device=rows_Bn.device)[:, None] * length
    return (rows_Bn + offsets_B1).reshape(-1)


def gather_rows(x_BLD: torch.Tensor, rows_Bn: torch.Tensor) -> torch.Tensor:
    """(B, n, D) rows `rows_Bn` (per batch element) of a (B, L, D) tensor.

    One `index_select` of whole rows: several times faster on CPU than `torch.gather` with an index
    expanded over D, which reads one index per element.
    """
    B, L, D = x_BLD.shape
    return x_BLD.reshape(B * L, D).index_select(0, _flat_rows(rows_Bn, L)).view(B, -1, D)


def scatter_rows(
    x_BLD: torch.Tensor, rows_Bn: torch.Tensor, src_BnD: torch.Tensor, inplace: bool = False
) -> torch.Tensor:
    """A copy of (B, L, D) `x_BLD` with rows `rows_Bn` replaced by `src_BnD` (B, n, D); the inverse of
    `gather_rows`, as one `index_copy` of whole rows. `inplace` writes into `x_BLD` (contiguous) instead."""
    B, L, D = x_BLD.shape
    index, src = _flat_rows(rows_Bn, L), src_BnD.reshape(-1, D)
    if inplace:
        return x_BLD.view(B * L, D).index_copy_(0, index, src).view(B, L, D)
    return x_BLD.reshape(B * L, D).index_copy(0, index, src).view(B, L, D)


class RMSNorm(nn.Module):
    """x / rms(x) * weight, normalised in float32 (eps inside the square root).

    On a GPU, input and weight of one dtype go through `F.rms_norm`: one fused kernel instead of the explicit
    form's seven (a cached pass runs two norms per block, and a GPU pass waits on launches), the same
    function (in bf16 one rounding fewer: the weight is applied before the result is rounded). On a CPU torch
    has no fused kernel: `F.rms_norm` runs the same operations, measured 1.3-1.8% slower in bf16 sampling
    (Xeon, one thread), so the CPU and autocast's mixed dtypes take the explicit form.
    """

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x_BLD: torch.Tensor) -> torch.Tensor:
        if x_BLD.is_cuda and x_BLD.dtype == self.weight.dtype:
            return F.rms_norm(x_BLD, (x_BLD.shape[-1],), self.weight, self.eps)
        xf = x_BLD.float()
        out = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return out.type_as(x_BLD) * self.weight


class SwiGLU(nn.Module):
    """w2(silu(w1 x) * w3 x), no biases (LlamaGen `feed_forward`)."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.w1 = Linear(dim, hidden, bias=False)
        self.w3 = Linear(dim, hidden, bias=False)
        self.w2 = Linear(hidden, dim, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x_BLD: torch.Tensor) -> torch.Tensor:
        if packs(x_BLD, self.w1.weight):  # SiLU and the product inside the kernels, on the fp32 sums
            a_BLF = packed_linear(x_BLD, self.w1.weight, None, self.w1, "swish")
            h_BLF = packed_linear(x_BLD, self.w3.weight, None, self.w3, "mul", other_NO=a_BLF)
        else:
            h_BLF = F.silu(self.w1(x_BLD)) * self.w3(x_BLD)
        return self.dropout(self.w2(h_BLF))


class LabelEmbedder(nn.Module):
    """Class embedding table with one extra null row (id = num_classes) for classifier-free guidance."""

    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.embedding_table = nn.Embedding(num_classes + 1, dim)

    def forward(self, labels_B: torch.Tensor) -> torch.Tensor:
        return self.embedding_table(labels_B)

    def drop(
        self, labels_B: torch.Tensor, prob: float, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Replace each label by the null id with probability `prob` (label dropout for CFG training)."""
        if prob <= 0:
            return labels_B
        device = generator.device if generator is not None else labels_B.device
        u = torch.rand(labels_B.shape, generator=generator, device=device).to(labels_B.device)
        return torch.where(u < prob, self.num_classes, labels_B)
