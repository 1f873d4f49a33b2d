"""Vector quantizers: single-scale nearest code (LlamaGen) and multi-scale residual (VAR).

Shape legend: B batch, C code dim, H/W latent grid, h/w a scale's grid, N = B*h*w flattened codes,
V codebook size, S number of scales, L tokens of one scale (pn*pn).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def usage_stats(idx: torch.Tensor, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fraction of the codebook hit by `idx` (any shape) and the perplexity of its code histogram."""
    return usage_from_counts(torch.bincount(idx.reshape(-1), minlength=vocab_size))


def usage_from_counts(counts_V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(fraction of codes with a nonzero count, perplexity exp(entropy) of the histogram) from (V,) counts."""
    p_V = counts_V.float() / counts_V.sum().clamp_min(1)
    perplexity = torch.exp(-(p_V * torch.log(p_V.clamp_min(1e-10))).sum())
    return (counts_V > 0).float().mean(), perplexity


def _sq_dist(z_NC: torch.Tensor, e_VC: torch.Tensor) -> torch.Tensor:
    # |z|^2 + |e|^2 - 2 z.e, in the order VAR's nearest-code search uses, so ties break the same way;
    # always fp32 (bf16 distances pick different codes)
    z_NC, e_VC = z_NC.float(), e_VC.float()
    with torch.autocast(z_NC.device.type, enabled=False):
        d_NV = z_NC.square().sum(1, keepdim=True) + e_VC.square().sum(1)
        return d_NV.addmm_(z_NC, e_VC.T, alpha=-2, beta=1)


# Distances per chunk of 2**20 on CPU (4 MB of fp32): a chunk stays in cache and reuses freed memory, where
# one (N, V) matrix per batch (134 MB for 256 vq2_fmnist images) comes in fresh pages on every call. With
# `min` rather than `argmin` (the same first index on ties, a faster CPU kernel): 44 ms instead of 152 there.
_DIST_CHUNK = 2**20


def _nearest_code(z_NC: torch.Tensor, e_VC: torch.Tensor) -> torch.Tensor:
    """Index (N,) of the nearest code to each row by `_sq_dist`, the first one on ties; on CPU over chunks of
    rows, elsewhere in one.

    Each chunk's distances are bitwise those of the whole matrix (the same addmm, and never on one row alone,
    where BLAS switches to a matrix-vector kernel that rounds differently), so the codes do not depend on it.
    """
    n = len(z_NC)
    rows = max(2, _DIST_CHUNK // len(e_VC)) if z_NC.device.type == "cpu" else max(n, 1)
    starts = list(range(0, max(n - 1, 1), rows))  # a last single row joins the chunk before
    idx_N = torch.empty(n, dtype=torch.long, device=z_NC.device)
    for begin, end in zip(starts, [*starts[1:], n], strict=True):
        idx_N[begin:end] = _sq_dist(z_NC[begin:end], e_VC).min(1).indices
    return idx_N


def _no_autocast(fn: Callable) -> Callable:
    """Run a quantizer method at its own precision: codes, residuals and phi convs must not drop to bf16."""

    @functools.wraps(fn)
    def wrapper(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        with torch.autocast(self.embedding.weight.device.type, enabled=False):
            return fn(self, *args, **kwargs)

    return wrapper


# ----------------------------------------------------------------------------------------- single scale
@dataclass
class VectorQuantizerConfig:
    """Nearest-code quantizer (LlamaGen's `VectorQuantizer`).

    l2_norm: compare l2-normalised latents with an l2-normalised codebook (cosine nearest code).
    usage_window: length of the `codebook_used` ring buffer of recent codes (65536 in LlamaGen files).
    """

    codebook_size: int = 16384
    dim: int = 8
    beta: float = 0.25
    l2_norm: bool = True
    usage_window: int = 65536

    def __post_init__(self) -> None:
        if self.codebook_size < 2 or self.dim < 1:
            raise ValueError("codebook_size must be >= 2 and the code dim >= 1")
        if self.beta < 0:
            raise ValueError(f"commitment beta must be >= 0, got {self.beta}")


class VectorQuantizer(nn.Module):
    """Single-scale quantizer with straight-through gradients and codebook/commitment losses."""

    def __init__(self, config: VectorQuantizerConfig) -> None:
        super().__init__()
        self.config = config
        # persistent: LlamaGen checkpoints carry it; ring buffer of the most recent training codes
        self.register_buffer("codebook_used", torch.zeros(config.usage_window))
        self.embedding = nn.Embedding(config.codebook_size, config.dim)

    def init_weights(self) -> None:
        v = self.config.codebook_size
        with torch.no_grad():
            self.embedding.weight.uniform_(-1.0 / v, 1.0 / v)
            if self.config.l2_norm:
                self.embedding.weight.copy_(F.normalize(self.embedding.weight, dim=-1))
            self.codebook_used.zero_()

    def codebook(self) -> torch.Tensor:
        """(V, C) codebook as used for lookup (normalised when l2_norm)."""
        e_VC = self.embedding.weight
        return F.normalize(e_VC, dim=-1) if self.config.l2_norm else e_VC

    def nearest(self, z_BCHW: torch.Tensor) -> torch.Tensor:
        """Indices (B, H, W) of the nearest codes to each latent vector."""
        B, C, H, W = z_BCHW.shape
        z_NC = z_BCHW.permute(0, 2, 3, 1).reshape(-1, C)
        if self.config.l2_norm:
            z_NC = F.normalize(z_NC, dim=-1)
        return _nearest_code(z_NC.detach(), self.codebook().detach()).view(B, H, W)

    def embed(self, idx_BHW: torch.Tensor) -> torch.Tensor:
        """Codes (B, H, W) -> quantized latents (B, C, H, W)."""
        return F.embedding(idx_BHW, self.codebook()).permute(0, 3, 1, 2).contiguous()

    @_no_autocast
    def forward(self, z_BCHW: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Quantize with straight-through gradients.

        Returns:
            zq_BCHW (value of the codes, gradient of the latents), idx_BHW, aux dict with "codebook_loss",
            "commit_loss" (already times beta), "usage" (fraction of codes in this batch), "perplexity".
        """
        z_BCHW = z_BCHW.to(self.embedding.weight.dtype)
        idx_BHW = self.nearest(z_BCHW)
        z = F.normalize(z_BCHW, dim=1) if self.config.l2_norm else z_BCHW
        zq = self.embed(idx_BHW)
        codebook_loss = F.mse_loss(zq, z.detach())
        commit_loss = self.config.beta * F.mse_loss(z, zq.detach())
        if self.training:
            self._record(idx_BHW)
        usage, perplexity = usage_stats(idx_BHW, self.config.codebook_size)
        aux = {
            "codebook_loss": codebook_loss,
            "commit_loss": commit_loss,
            "usage": usage,
            "perplexity": perplexity,
        }
        return z + (zq - z).detach(), idx_BHW, aux

    @torch.no_grad()
    def _record(self, idx_BHW: torch.Tensor) -> None:
        new = idx_BHW.reshape(-1)[-self.codebook_used.numel() :].to(self.codebook_used.dtype)
        self.codebook_used.copy_(torch.cat([self.codebook_used[new.numel() :], new]))

    def window_usage(self) -> float:
        """Fraction of the codebook seen among the last `usage_window` training codes."""
        return torch.unique(self.codebook_used).numel() / self.config.codebook_size


# ------------------------------------------------------------------------------------------ multi scale
@dataclass
class ResidualQuantizerConfig:
    """VAR's multi-scale residual quantizer (`VectorQuantizer2`).

    patch_nums: side of each scale's token grid, increasing; the last equals the latent grid side.
    quant_resi: phi mixing ratio r in `h*(1-r) + conv(h)*r`.
    share_quant_resi: number of phi convs shared over the scales (VAR: 4), picked by the nearest tick.
    using_znorm: cosine nearest code instead of Euclidean.
    """

    vocab_size: int = 4096
    dim: int = 32
    patch_nums: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
    beta: float = 0.25
    quant_resi: float = 0.5
    share_quant_resi: int = 4
    using_znorm: bool = False

    def __post_init__(self) -> None:
        self.patch_nums = tuple(self.patch_nums)
        if not self.patch_nums or any(
            b <= a for a, b in zip(self.patch_nums[:-1], self.patch_nums[1:], strict=True)
        ):
            raise ValueError(f"patch_nums must be a non-empty increasing tuple, got {self.patch_nums}")
        if not 0 < self.quant_resi <= 1:
            raise ValueError(f"quant_resi must be in (0, 1], got {self.quant_resi}")
        if self.share_quant_resi < 1:
            raise ValueError("share_quant_resi must be >= 1 (number of shared phi convs; VAR uses 4)")


class Phi(nn.Conv2d):
    """3x3 conv mixer `h*(1-r) + conv(h)*r` applied to each scale's upsampled codes."""

    def __init__(self, dim: int, ratio: float) -> None:
        super().__init__(dim, dim, kernel_size=3, stride=1, padding=1)
        self.ratio = ratio

    def forward(self, h_BCHW: torch.Tensor) -> torch.Tensor:
        return h_BCHW * (1 - self.ratio) + super().forward(h_BCHW) * self.ratio


class PhiShared(nn.Module):
    """K phi convs shared over the scales: scale si uses the conv whose tick is nearest to si/(S-1)."""

    def __init__(self, count: int, dim: int, ratio: float) -> None:
        super().__init__()
        self.qresi_ls = nn.ModuleList(Phi(dim, ratio) for _ in range(count))
        k = count
        # VAR's tick placement (a fact of the checkpoint format, not a tunable)
        self.ticks = (
            np.linspace(1 / 3 / k, 1 - 1 / 3 / k, k) if k == 4 else np.linspace(1 / 2 / k, 1 - 1 / 2 / k, k)
        )

    def at(self, si: int, num_scales: int) -> Phi:
        frac = si / (num_scales - 1) if num_scales > 1 else 0.0
        return self.qresi_ls[int(np.argmin(np.abs(self.ticks - frac)))]


class ResidualQuantizer(nn.Module):
    """Multi-scale residual quantizer over one shared codebook (VAR numerics and key names)."""

    def __init__(self, config: ResidualQuantizerConfig) -> None:
        super().__init__()
        self.config = config
        # persistent: VAR checkpoints carry it; EMA of code hits per scale during training
        self.register_buffer("ema_vocab_hit_SV", torch.zeros(len(config.patch_nums), config.vocab_size))
        self.quant_resi = PhiShared(config.share_quant_resi, config.dim, config.quant_resi)
        self.embedding = nn.Embedding(config.vocab_size, config.dim)

    def init_weights(self) -> None:
        v = self.config.vocab_size
        with torch.no_grad():
            self.embedding.weight.uniform_(-1.0 / v, 1.0 / v)
            for phi in self.quant_resi.qresi_ls:
                phi.reset_parameters()
            self.ema_vocab_hit_SV.zero_()

    def phi(self, si: int) -> Phi:
        return self.quant_resi.at(si, len(self.config.patch_nums))

    def nearest(self, rest_BCHW: torch.Tensor, pn: int) -> torch.Tensor:
        """Area-downsample the residual to pn x pn and return the nearest codes (B*pn*pn,)."""
        C, H = rest_BCHW.shape[1:3]
        z = rest_BCHW if pn == H else F.interpolate(rest_BCHW, size=(pn, pn), mode="area")
        z_NC = z.permute(0, 2, 3, 1).reshape(-1, C)
        e_VC = self.embedding.weight.detach()
        if self.config.using_znorm:
            return (F.normalize(z_NC, dim=-1) @ F.normalize(e_VC.T, dim=0)).argmax(1)
        return _nearest_code(z_NC, e_VC)

    def upsampled_codes(self, si: int, h_BChw: torch.Tensor, side: int) -> torch.Tensor:
        """phi_si(bicubic upsample of a scale's code embeddings to the full side)."""
        if si != len(self.config.patch_nums) - 1:
            h_BChw = F.interpolate(h_BChw, size=(side, side), mode="bicubic")
        return self.phi(si)(h_BChw)

    def _embed_scale(self, idx_BL: torch.Tensor) -> torch.Tensor:
        B, L = idx_BL.shape
        pn = round(L**0.5)
        return self.embedding(idx_BL).transpose(1, 2).reshape(B, self.config.dim, pn, pn)

    def _check_latent(self, f_BCHW: torch.Tensor) -> None:
        side = self.config.patch_nums[-1]
        if f_BCHW.shape[-2:] != (side, side):
            raise ValueError(
                f"latent grid {tuple(f_BCHW.shape[-2:])} must be {side}x{side} = patch_nums[-1]; "
                "resize the images to the tokenizer's image size"
            )

    @torch.no_grad()
    @_no_autocast
    def f_to_idxBl(self, f_BCHW: torch.Tensor) -> list[torch.Tensor]:
        """Latents (B, C, H, W) -> per-scale codes [(B, pn*pn)]."""
        self._check_latent(f_BCHW)
        f_rest = f_BCHW.detach().to(self.embedding.weight.dtype, copy=True)
        idx_Bl = []
        for si, pn in enumerate(self.config.patch_nums):
            idx_Bl.append(self.nearest(f_rest, pn).view(len(f_BCHW), pn * pn))
            if si < len(self.config.patch_nums) - 1:  # the last scale's residual is not used
                f_rest -= self.upsampled_codes(si, self._embed_scale(idx_Bl[-1]), f_BCHW.shape[-1])
        return idx_Bl

    @_no_autocast
    def idxBl_to_fhat(self, idx_Bl: list[torch.Tensor]) -> torch.Tensor:
        """Per-scale codes -> f_hat (B, C, H, W) at the last scale."""
        side = self.config.patch_nums[-1]
        f_hat = 0
        for si, idx_BL in enumerate(idx_Bl):
            f_hat = f_hat + self.upsampled_codes(si, self._embed_scale(idx_BL), side)
        return f_hat

    @_no_autocast
    def idxBl_to_var_input(self, idx_Bl: list[torch.Tensor]) -> torch.Tensor:
        """VAR teacher-forcing input (B, L - pn0^2, C): f_hat after each scale, area-downsampled."""
        pns, side = self.config.patch_nums, self.config.patch_nums[-1]
        B = idx_Bl[0].shape[0]
        f_hat = idx_Bl[0].new_zeros(B, self.config.dim, side, side, dtype=self.embedding.weight.dtype)
        next_BlC = []
        for si in range(len(pns) - 1):
            h = F.interpolate(self._embed_scale(idx_Bl[si]), size=(side, side), mode="bicubic")
            f_hat = f_hat + self.phi(si)(h)
            nxt = F.interpolate(f_hat, size=(pns[si + 1], pns[si + 1]), mode="area")
            next_BlC.append(nxt.flatten(2).transpose(1, 2))
        if not next_BlC:
            return f_hat.new_zeros(B, 0, self.config.dim)
        return torch.cat(next_BlC, dim=1)

    @_no_autocast
    def next_autoregressive_input(
        self, si: int, num_scales: int, f_hat_BCHW: torch.Tensor, h_BChw: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Add scale si's codes (B, C, pn, pn) to f_hat; return (f_hat, next input (B, C, pn', pn'))."""
        side = self.config.patch_nums[-1]
        if si != num_scales - 1:
            f_hat = f_hat_BCHW + self.phi(si)(F.interpolate(h_BChw, size=(side, side), mode="bicubic"))
            pn = self.config.patch_nums[si + 1]
            return f_hat, F.interpolate(f_hat, size=(pn, pn), mode="area")
        f_hat = f_hat_BCHW + self.phi(si)(h_BChw)
        return f_hat, f_hat

    @_no_autocast
    def forward(
        self, f_BCHW: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor], dict[str, torch.Tensor]]:
        """Training quantization (argen's own; VAR released none).

        The residual is quantized scale by scale without gradient; the codebook and phi convs learn from
        `mse(f_hat_k, f.detach())` at every scale k, the encoder from the commitment term and from the
        straight-through estimate `f + (f_hat - f).detach()`.

        Returns:
            f_hat_BCHW (straight-through), per-scale codes [(B, pn*pn)], aux dict with "codebook_loss",
            "commit_loss", "usage", "perplexity" (over all scales).
        """
        self._check_latent(f_BCHW)
        f_BCHW = f_BCHW.to(self.embedding.weight.dtype)
        B, _, _, side = f_BCHW.shape
        f_nograd = f_BCHW.detach()
        f_rest, f_hat = f_nograd.clone(), torch.zeros_like(f_nograd)
        codebook_loss = commit_loss = f_BCHW.new_zeros(())
        idx_Bl = []
        for si, pn in enumerate(self.config.patch_nums):
            idx_N = self.nearest(f_rest, pn)
            h = self.upsampled_codes(si, self._embed_scale(idx_N.view(B, -1)), side)
            f_hat = f_hat + h
            f_rest = f_rest - h.detach()
            codebook_loss = codebook_loss + F.mse_loss(f_hat, f_nograd)
            commit_loss = commit_loss + self.config.beta * F.mse_loss(f_BCHW, f_hat.detach())
            idx_Bl.append(idx_N.view(B, pn * pn))
            if self.training:
                self._record(si, idx_N)
        S = len(self.config.patch_nums)
        usage, perplexity = usage_stats(torch.cat(idx_Bl, 1), self.config.vocab_size)
        aux = {
            "codebook_loss": codebook_loss / S,
            "commit_loss": commit_loss / S,
            "usage": usage,
            "perplexity": perplexity,
        }
        return f_BCHW + (f_hat - f_BCHW).detach(), idx_Bl, aux

    @torch.no_grad()
    def _record(self, si: int, idx_N: torch.Tensor) -> None:
        hit_V = torch.bincount(idx_N, minlength=self.config.vocab_size).float()
        ema = self.ema_vocab_hit_SV[si]
        ema.copy_(hit_V if ema.sum() == 0 else ema * 0.99 + hit_V * 0.01)
