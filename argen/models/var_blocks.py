"""VAR's transformer pieces: cosine self-attention (optionally on a subset of query rows), the FFN, the
AdaLN block and the modulated head norm (official key names). `argen.models.var.VAR` stacks them; ActVAR
runs the same blocks on its kept tokens.

Shape legend: B batch, L tokens, n computed (kept) rows, S keys, C width, D condition width (= C), H heads,
Dh head dim.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from argen.models.var_config import VARConfig
from argen.nn.attention import attention
from argen.nn.kv_cache import Positions
from argen.nn.layers import Mods, block_mods, gather_rows, linear_gelu_tanh, modulate
from argen.nn.linear import Linear, packed_linear

# Official attention clamps its learnable log-scale at log(100), computed in fp32.
MAX_LOG_SCALE = torch.tensor(100.0).log().item()


def _drop_path(x_BLC: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    if p == 0.0 or not training:
        return x_BLC
    keep_B11 = x_BLC.new_empty(x_BLC.shape[0], 1, 1).bernoulli_(1 - p)
    return x_BLC * keep_B11 / (1 - p)


class SelfAttention(nn.Module):
    """Multi-head self-attention with q/v biases (zero k bias) and optional cosine (l2-normalised) scores.

    While `self.cache` holds a `KVCache` (set by `VAR.kv_caches`), keys/values are written at `pos_l` and the
    queries read the cache prefix `[0, end)`. With `rows_Bn`, only those rows ask queries (ActVAR's kept
    tokens); every row still gives its key and value.
    """

    def __init__(self, config: VARConfig) -> None:
        super().__init__()
        C, H = config.dim, config.num_heads
        self.num_heads, self.head_dim, self.l2_norm = H, C // H, config.attn_l2_norm
        self.mat_qkv = Linear(C, 3 * C, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(C))
        self.v_bias = nn.Parameter(torch.zeros(C))
        if self.l2_norm:
            self.scale_mul_1H11 = nn.Parameter(torch.full((1, H, 1, 1), 4.0).log())
        self.proj = Linear(C, C)
        self.cache = None

    def project(
        self, h_BLC: torch.Tensor, rows_Bn: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries (B, H, n, Dh) of `rows_Bn` (all L rows when None), keys and values (B, H, L, Dh) of every
        row; cosine attention's normalisation and learned scale applied."""
        B, L, C = h_BLC.shape
        H, Dh = self.num_heads, self.head_dim
        zeros = torch.zeros_like(self.q_bias)
        if rows_Bn is None:
            qkv_bias = torch.cat((self.q_bias, zeros, self.v_bias))
            qkv = packed_linear(h_BLC, self.mat_qkv.weight, qkv_bias, self.mat_qkv)
            q_BHnD, k_BHLD, v_BHLD = qkv.view(B, L, 3, H, Dh).permute(2, 0, 3, 1, 4).unbind(0)
        else:
            w = self.mat_qkv.weight
            kv = packed_linear(h_BLC, w[C:], torch.cat((zeros, self.v_bias)), self.mat_qkv)
            k_BHLD, v_BHLD = kv.view(B, L, 2, H, Dh).permute(2, 0, 3, 1, 4).unbind(0)
            q = packed_linear(gather_rows(h_BLC, rows_Bn), w[:C], self.q_bias, self.mat_qkv)
            q_BHnD = q.view(B, -1, H, Dh).transpose(1, 2)
        if self.l2_norm:
            q_BHnD = F.normalize(q_BHnD, dim=-1) * self.scale_mul_1H11.clamp_max(MAX_LOG_SCALE).exp()
            k_BHLD = F.normalize(k_BHLD, dim=-1)
        return q_BHnD, k_BHLD, v_BHLD

    def forward(
        self,
        h_BLC: torch.Tensor,
        mask_nS: torch.Tensor | None = None,
        pos_l: Positions | None = None,
        end: int | None = None,
        rows_Bn: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, L, C) -> (B, n, C) (n = L without `rows_Bn`).

        Args:
            h_BLC: modulated block input.
            mask_nS: boolean mask of the queried rows for teacher forcing (None = no mask / cached step).
            pos_l, end: when a cache is attached, the positions of the L rows and the prefix end to read.
            rows_Bn: rows that ask queries (None = all).
        """
        B, _, C = h_BLC.shape
        q_BHnD, k_BHLD, v_BHLD = self.project(h_BLC, rows_Bn)
        if self.cache is not None:
            if pos_l is None or end is None:
                raise ValueError("a cached attention step needs the positions `pos_l` and prefix `end`")
            k_all, v_all = self.cache.update(pos_l, k_BHLD, v_BHLD)
            k_BHLD, v_BHLD = k_all[:, :, :end], v_all[:, :, :end]
        scale = 1.0 if self.l2_norm else 0.25 / math.sqrt(self.head_dim)
        out_BHnD = attention(q_BHnD, k_BHLD, v_BHLD, mask_nS, scale=scale)
        return self.proj(out_BHnD.transpose(1, 2).reshape(B, -1, C))


class FFN(nn.Module):
    """fc1 C->4C, GELU(tanh), fc2 4C->C. ActVAR splits fc1 rows / fc2 columns into experts."""

    def __init__(self, config: VARConfig) -> None:
        super().__init__()
        self.fc1 = Linear(config.dim, config.hidden)
        self.fc2 = Linear(config.hidden, config.dim)

    def forward(self, x_BLC: torch.Tensor) -> torch.Tensor:
        return self.fc2(linear_gelu_tanh(x_BLC, self.fc1))


class AdaLNBlock(nn.Module):
    """Pre-norm transformer block modulated by the class condition (AdaLN-Zero style, official layout).

    `h = x + gamma1 * attn(norm(x) * (1 + scale1) + shift1)`; `out = h + gamma2 * ffn(norm(h) * (1 + scale2)
    + shift2)`. `forward` can run on a subset of rows (ActVAR's kept tokens: their queries attend to every
    row) and passes extra keyword arguments to the FFN (ActVAR's sparse FFN takes its experts per token).
    The modulated inputs reach `self.attn` and `self.ffn` as their first argument (forward hooks see them).
    """

    def __init__(self, config: VARConfig, drop_path: float = 0.0) -> None:
        super().__init__()
        C = config.dim
        self.dim, self.drop_path, self.shared_aln = C, drop_path, config.shared_aln
        self.attn = SelfAttention(config)
        self.ffn = FFN(config)
        self.ln_wo_grad = nn.LayerNorm(C, eps=config.norm_eps, elementwise_affine=False)
        if config.shared_aln:
            self.ada_gss = nn.Parameter(torch.randn(1, 1, 6, C) / C**0.5)
        else:
            self.ada_lin = nn.Sequential(nn.SiLU(), Linear(C, 6 * C))

    def modulation(self, cond: torch.Tensor) -> Mods:
        """The block's `Mods`, each (B, 1, C).

        Args:
            cond: (B, D) class embedding, or (B, 1, 6, C) output of the shared modulation when `shared_aln`.
        """
        return block_mods(self.ada_gss + cond if self.shared_aln else self.ada_lin(cond), self.dim)

    def attn_input(self, x_BLC: torch.Tensor, mods: Mods) -> torch.Tensor:
        """(B, L, C) modulated attention input."""
        return modulate(self.ln_wo_grad(x_BLC), mods.scale1, mods.shift1)

    def attn_branch(
        self,
        x_BLC: torch.Tensor,
        mods: Mods,
        mask_LS: torch.Tensor | None = None,
        pos_l: Positions | None = None,
        end: int | None = None,
    ) -> torch.Tensor:
        """Gated attention update (B, L, C), to be added to `x_BLC`."""
        return self.attn(self.attn_input(x_BLC, mods), mask_LS, pos_l, end).mul_(mods.gamma1)

    def ffn_branch(self, x_BLC: torch.Tensor, mods: Mods, **ffn_kwargs: Any) -> torch.Tensor:
        """Gated FFN update (B, L, C), to be added to `x_BLC`; `ffn_kwargs` go to the FFN."""
        h_BLC = modulate(self.ln_wo_grad(x_BLC), mods.scale2, mods.shift2)
        return self.ffn(h_BLC, **ffn_kwargs).mul(mods.gamma2)

    def forward(
        self,
        x_BLC: torch.Tensor,
        mods: Mods,
        mask_nS: torch.Tensor | None = None,
        pos_l: Positions | None = None,
        end: int | None = None,
        *,
        h_BLC: torch.Tensor | None = None,
        rows_Bn: torch.Tensor | None = None,
        weight_Bn1: torch.Tensor | None = None,
        **ffn_kwargs: Any,
    ) -> torch.Tensor:
        """The block on (B, L, C); returns (B, L, C), or with `rows_Bn` the (B, n, C) updated rows only.

        Args:
            mask_nS: attention mask of the computed rows (teacher forcing). pos_l / end: cached step.
            h_BLC: `attn_input(x_BLC, mods)` when the caller already has it.
            rows_Bn: rows to compute (None = all); the others only give keys and values.
            weight_Bn1: factor on both branch updates (ActVAR's straight-through gate; None = 1).
            ffn_kwargs: passed to the FFN.
        """
        h_BLC = self.attn_input(x_BLC, mods) if h_BLC is None else h_BLC
        if rows_Bn is not None:
            x_BLC = gather_rows(x_BLC, rows_Bn)
        update = self.attn(h_BLC, mask_nS, pos_l, end, rows_Bn).mul_(mods.gamma1)
        if weight_Bn1 is not None:
            update = update * weight_Bn1
        x_BLC = x_BLC + _drop_path(update, self.drop_path, self.training)
        update = self.ffn_branch(x_BLC, mods, **ffn_kwargs)
        if weight_Bn1 is not None:
            update = update * weight_Bn1
        return x_BLC + _drop_path(update, self.drop_path, self.training)


class AdaLNBeforeHead(nn.Module):
    """Final LayerNorm (no affine) modulated by scale/shift from the class condition."""

    def __init__(self, config: VARConfig) -> None:
        super().__init__()
        C = config.dim
        self.dim = C
        self.ln_wo_grad = nn.LayerNorm(C, eps=config.norm_eps, elementwise_affine=False)
        self.ada_lin = nn.Sequential(nn.SiLU(), Linear(C, 2 * C))

    def forward(self, x_BLC: torch.Tensor, cond_BD: torch.Tensor) -> torch.Tensor:
        scale_B1C, shift_B1C = self.ada_lin(cond_BD).view(-1, 1, 2, self.dim).unbind(2)
        return modulate(self.ln_wo_grad(x_BLC), scale_B1C, shift_B1C)
