"""A dense FFN viewed as E equal experts (MoEfication), a top-k router and grouped expert execution.

Shape legend: N tokens, C width, H hidden units (4C), E experts, M hidden units per expert (H/E),
K experts per token (at most), A (token, expert) assignments, P padded slots per expert.

No new FFN weights: the hidden units of `fc1`/`fc2` are permuted so that expert e owns the contiguous block
of rows `fc1.weight[e*M:(e+1)*M]` (and the same columns of `fc2.weight`). Permuting hidden units leaves the
dense function unchanged, so with every expert active the MoE FFN equals the dense FFN up to fp32 summation
order; `perm_H` keeps the permutation so the dense weights are restored bit for bit.

`SparseFFN` is the interface ActVAR builds its FFNs through; `MoEFFN` is the one variant shipped. A new
variant is one class with that interface plus `@register_sparse_ffn("name")`, chosen by `ActVARConfig.ffn`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from argen.nn.expert_kernels import grouped_expert_ffn, grouped_pays, masked_expert_ffn
from argen.nn.layers import gelu_tanh, linear_gelu_tanh
from argen.nn.linear import Linear
from argen.nn.moe_config import MoEConfig


def fp32_linear(layer: nn.Linear, x_NC: torch.Tensor) -> torch.Tensor:
    """`layer(x)` computed in fp32 (also under autocast): for the few outputs that pick experts or tokens,
    where bf16 rounding would flip top-k choices; costs width x outputs per token."""
    bias = None if layer.bias is None else layer.bias.float()
    with torch.autocast(x_NC.device.type, enabled=False):
        return F.linear(x_NC.float(), layer.weight.float(), bias)


class SparseFFN(Protocol):
    """What ActVAR needs of a sparse FFN (one class per variant, registered with `register_sparse_ffn`).

    Shapes: x (..., C) modulated FFN input; k experts per token (an int, or a tensor over x's leading dims;
    None = all experts, which must equal the dense FFN).
    """

    config: MoEConfig

    def __init__(self, config: MoEConfig) -> None: ...

    @classmethod
    def from_dense(cls, fc1: nn.Linear, fc2: nn.Linear, config: MoEConfig | int, seed: int = 0) -> Any:
        """The variant made from a trained dense FFN (fc1 C->H, fc2 H->C) without changing its function."""

    def init_weights(self) -> None:
        """Initialise what the dense FFN does not have (routers)."""

    def forward(
        self, x: torch.Tensor, k: torch.Tensor | int | None = None, router_trace: list | None = None
    ) -> torch.Tensor:
        """(..., C) output with each token's top-k experts; appends (router logits (..., E) fp32, k per token)
        to `router_trace` when given (distillation)."""

    def router_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(..., E) fp32 router logits."""

    def expert_norms(self, x: torch.Tensor) -> torch.Tensor:
        """(..., E) L2 norm of each expert's output: the router's distillation target."""

    def dense_state(self) -> dict[str, torch.Tensor]:
        """fc1/fc2 weights of the equivalent dense FFN (for export as a plain VAR)."""

    @staticmethod
    def flops(config: MoEConfig, tokens: int, k: int) -> int:
        """Forward FLOPs (2 per multiply-add, matmuls only) of `tokens` tokens with k experts each."""


SPARSE_FFNS: dict[str, type] = {}


def register_sparse_ffn(name: str) -> Callable[[type], type]:
    """Class decorator: make a `SparseFFN` variant available as `ActVARConfig(ffn=name)`."""

    def add(cls: type) -> type:
        SPARSE_FFNS[name] = cls
        return cls

    return add


def sparse_ffn_class(name: str) -> type:
    """The registered `SparseFFN` class called `name`."""
    if name not in SPARSE_FFNS:
        raise ValueError(f"unknown sparse FFN {name!r}; registered: {sorted(SPARSE_FFNS)}")
    return SPARSE_FFNS[name]


# ------------------------------------------------------------------------------------------- splitting
def balanced_kmeans(x_NC: torch.Tensor, num_clusters: int, iters: int = 20, seed: int = 0) -> torch.Tensor:
    """Cluster rows into `num_clusters` clusters of exactly N / num_clusters rows (cosine k-means).

    Assignment is greedy by regret (rows whose best cluster beats their second best by the largest margin
    choose first), so it is deterministic given `seed` (which only picks the initial centroids).

    Args:
        x_NC: rows to cluster; they are L2-normalised first.
    Returns:
        (N,) int64 cluster id per row, every cluster holding N / num_clusters rows.
    """
    n = x_NC.shape[0]
    if n % num_clusters:
        raise ValueError(f"{n} rows cannot be split into {num_clusters} equal clusters")
    cap = n // num_clusters
    x = F.normalize(x_NC.detach().double().cpu(), dim=1).numpy()
    g = torch.Generator().manual_seed(seed)
    centroids = x[torch.randperm(n, generator=g)[:num_clusters].numpy()]
    labels = np.zeros(n, dtype=np.int64)
    for _ in range(iters):
        new = _balanced_assign(x @ centroids.T, cap)
        converged = np.array_equal(new, labels)
        labels = new
        for c in range(num_clusters):
            mean = x[labels == c].mean(axis=0)
            centroids[c] = mean / max(np.linalg.norm(mean), 1e-12)
        if converged:
            break
    return torch.from_numpy(labels)


def _balanced_assign(score_NE: np.ndarray, cap: int) -> np.ndarray:
    num = score_NE.shape[1]
    pref_NE = np.argsort(-score_NE, axis=1, kind="stable")
    top2 = np.take_along_axis(score_NE, pref_NE[:, :2], axis=1) if num > 1 else np.zeros((len(score_NE), 2))
    order = np.argsort(-(top2[:, 0] - top2[:, 1]), kind="stable")
    fill = np.zeros(num, dtype=np.int64)
    labels = np.empty(len(score_NE), dtype=np.int64)
    for i in order:
        for c in pref_NE[i]:
            if fill[c] < cap:
                labels[i] = c
                fill[c] += 1
                break
    return labels


def expert_permutation(
    fc1_weight_HC: torch.Tensor, num_experts: int, iters: int = 20, seed: int = 0
) -> torch.Tensor:
    """Hidden-unit order that makes experts contiguous: expert e = units `perm[e*M:(e+1)*M]` (ascending)."""
    labels_H = balanced_kmeans(fc1_weight_HC, num_experts, iters, seed)
    # Stable sort by label keeps each expert's units in their original order.
    return torch.sort(labels_H, stable=True).indices


@register_sparse_ffn("moe")
class MoEFFN(nn.Module):
    """VAR's FFN (fc1 C->H, GELU(tanh), fc2 H->C) with hidden units grouped into experts and a router.

    Called as `ffn(x)` it is the dense FFN, so a model holding it still runs its dense forward; with
    `k` it runs only each token's top-k experts (the `SparseFFN` interface).
    """

    def __init__(self, config: MoEConfig) -> None:
        super().__init__()
        self.config = config
        self.fc1 = Linear(config.width, config.hidden)
        self.fc2 = Linear(config.hidden, config.width)
        self.router = nn.Linear(config.width, config.num_experts)
        # Persistent so `to_dense` can undo the permutation after a save/load round trip.
        self.register_buffer("perm_H", torch.arange(config.hidden), persistent=True)

    def init_weights(self) -> None:
        """Router starts at zero (uniform scores); FFN weights come from the dense model."""
        nn.init.zeros_(self.router.weight)
        nn.init.zeros_(self.router.bias)

    @classmethod
    def from_dense(
        cls, fc1: nn.Linear, fc2: nn.Linear, config: MoEConfig | int = 16, seed: int = 0, **options: Any
    ) -> MoEFFN:
        """Split a dense FFN into experts by balanced k-means on L2-normalised fc1 rows (no new weights).

        Args:
            config: the MoEConfig, or its number of experts with the other fields as `options`.
            seed: picks the k-means initial centroids.
        """
        if isinstance(config, int):
            config = MoEConfig(fc1.in_features, fc1.out_features, config, **options)
        moe = cls(config).to(device=fc1.weight.device, dtype=fc1.weight.dtype)
        moe.init_weights()
        perm_H = expert_permutation(fc1.weight, config.num_experts, config.kmeans_iters, seed)
        perm_H = perm_H.to(fc1.weight.device)
        with torch.no_grad():
            moe.fc1.weight.copy_(fc1.weight[perm_H])
            moe.fc1.bias.copy_(fc1.bias[perm_H])
            moe.fc2.weight.copy_(fc2.weight[:, perm_H])
            moe.fc2.bias.copy_(fc2.bias)
            moe.perm_H.copy_(perm_H)
        return moe

    def dense_state(self) -> dict[str, torch.Tensor]:
        """fc1/fc2 weights in the original dense unit order (exact inverse of the split)."""
        inv_H = torch.argsort(self.perm_H)
        return {
            "fc1.weight": self.fc1.weight.detach()[inv_H].clone(),
            "fc1.bias": self.fc1.bias.detach()[inv_H].clone(),
            "fc2.weight": self.fc2.weight.detach()[:, inv_H].clone(),
            "fc2.bias": self.fc2.bias.detach().clone(),
        }

    @staticmethod
    def flops(config: MoEConfig, tokens: int, k: int) -> int:
        """fc1 + fc2 of k experts per token, plus the router when k < E."""
        units = config.expert_hidden * k
        router = config.width * config.num_experts if k < config.num_experts else 0
        return 2 * tokens * (2 * config.width * units + router)

    def expert_weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Views (w1_EMC, b1_EM, w2_EMC) of the FFN weights per expert."""
        e, m, c = self.config.num_experts, self.config.expert_hidden, self.config.width
        w2_EMC = self.fc2.weight.view(c, e, m).permute(1, 2, 0)
        return self.fc1.weight.view(e, m, c), self.fc1.bias.view(e, m), w2_EMC

    def router_logits(self, x_NC: torch.Tensor) -> torch.Tensor:
        """(..., E) router logits, in fp32 whatever the model dtype (top-k picks need them exact)."""
        return fp32_linear(self.router, x_NC)

    def route(
        self, x_NC: torch.Tensor, k_N: torch.Tensor | int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Top-k experts per token (k an int, or a tensor when it differs per token).

        Returns:
            tok_A, exp_A, weight_A (the assignments; weights fp32) and the router logits (N, E).
        """
        logits_NE = self.router_logits(x_NC)
        k_max = k_N if isinstance(k_N, int) else int(k_N.max())
        top_NK = torch.topk(logits_NE, k_max, dim=1, sorted=True).indices
        tok_NK = torch.arange(x_NC.shape[0], device=x_NC.device)[:, None].expand_as(top_NK)
        if isinstance(k_N, int):  # uniform k (a sampling step): no ragged selection, no host sync
            tok_A, exp_A = tok_NK.reshape(-1), top_NK.reshape(-1)
        else:
            valid_NK = torch.arange(k_max, device=x_NC.device)[None, :] < k_N[:, None]
            tok_A, exp_A = tok_NK[valid_NK], top_NK[valid_NK]
        if self.config.straight_through and torch.is_grad_enabled():
            s_A = torch.sigmoid(logits_NE[tok_A, exp_A])
            weight_A = (s_A - s_A.detach()) + 1.0  # exactly 1 forward; gradient reaches the router
        else:
            weight_A = torch.ones(exp_A.shape, device=x_NC.device)
        return tok_A, exp_A, weight_A, logits_NE

    def forward(
        self,
        x_NC: torch.Tensor,
        k: torch.Tensor | int | None = None,
        router_trace: list | None = None,
        force_grouped: bool = False,
    ) -> torch.Tensor:
        """FFN output for (..., C) inputs with each token's top `k` experts (None or all = dense path).

        Args:
            x_NC: (..., C) modulated FFN input.
            k: experts per token, an int or a tensor over the leading dims; None = all experts.
            router_trace: list to append (router logits (..., E), k per token (...)) to (distillation).
            force_grouped: run the grouped kernel even when every expert is active (tests).
        Returns:
            (..., C).
        """
        num, lead = self.config.num_experts, x_NC.shape[:-1]
        k_N = num if k is None else k
        k_N = min(max(k_N, 1), num) if isinstance(k_N, int) else k_N.reshape(-1).clamp(1, num)
        if router_trace is not None:
            k_full = (
                k_N.view(lead) if isinstance(k_N, torch.Tensor) else torch.full(lead, k_N, device=x_NC.device)
            )
            router_trace.append((self.router_logits(x_NC), k_full))
        all_on = k_N == num if isinstance(k_N, int) else bool((k_N >= num).all())
        if all_on and not force_grouped:
            return self.fc2(linear_gelu_tanh(x_NC, self.fc1))
        x = x_NC.reshape(-1, x_NC.shape[-1])
        backend = self.config.backend
        if backend == "auto":
            k_max = k_N if isinstance(k_N, int) else int(k_N.max())
            backend = "masked" if not grouped_pays(self.config, k_max, x.device) else "auto"
        if backend == "masked" and isinstance(k_N, int) and not torch.is_grad_enabled():
            # sampling (one k, weights exactly 1): the 0/1 gate straight from the top-k ids, no assignments
            # the set only (torch selects it before sorting it, so it is sorted=True's set; 40% faster)
            top_NK = torch.topk(self.router_logits(x), k_N, dim=1, sorted=False).indices
            gate_NE = x.new_zeros(x.shape[0], num).scatter_(1, top_NK, 1.0)
            return masked_expert_ffn(x, self.fc1, self.fc2, gate_NE).view(*lead, -1)
        tok_A, exp_A, weight_A, _ = self.route(x, k_N)
        if backend == "masked":
            gate_NE = weight_A.new_zeros(x.shape[0], num).index_put((tok_A, exp_A), weight_A)
            y = masked_expert_ffn(x, self.fc1, self.fc2, gate_NE)
        else:
            y = grouped_expert_ffn(x, *self.expert_weights(), tok_A, exp_A, weight_A, backend)
            y = y + self.fc2.bias
        return y.view(*lead, -1)

    def expert_norms(self, x_NC: torch.Tensor) -> torch.Tensor:
        """L2 norm of every expert's output per token, (..., E): the router's distillation target."""
        e = self.config.num_experts
        h = gelu_tanh(self.fc1(x_NC))
        h_NEM = h.unflatten(-1, (e, -1))
        _, _, w2_EMC = self.expert_weights()
        y_NEC = torch.einsum("...em,emc->...ec", h_NEM, w2_EMC)
        return y_NEC.norm(dim=-1)
