"""The sparse-FFN interface: a new variant is one class plus its registration, and the expert backends agree.

The toy variant below ("first_k": no router, every token runs the first k experts) lives only in this file:
ActVAR builds, splits, runs, exports and counts FLOPs for it through `argen.nn.moe`'s registry.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from argen.models.actvar import ActVAR, ActVARConfig
from argen.models.flops import actvar_sampling_flops
from argen.models.var import VAR, var_config
from argen.nn.moe import (
    SPARSE_FFNS,
    MoEConfig,
    MoEFFN,
    grouped_pays,
    masked_expert_ffn,
    register_sparse_ffn,
    sparse_ffn_class,
)


class FirstK(nn.Module):
    """Toy variant: token-independent routing, the first k experts (contiguous hidden units) always run."""

    def __init__(self, config: MoEConfig) -> None:
        super().__init__()
        self.config = config
        self.fc1 = nn.Linear(config.width, config.hidden)
        self.fc2 = nn.Linear(config.hidden, config.width)

    @classmethod
    def from_dense(cls, fc1: nn.Linear, fc2: nn.Linear, config: MoEConfig, seed: int = 0) -> FirstK:
        ffn = cls(config)
        ffn.load_state_dict({"fc1." + k: v for k, v in fc1.state_dict().items()}, strict=False)
        ffn.load_state_dict({"fc2." + k: v for k, v in fc2.state_dict().items()}, strict=False)
        return ffn

    def init_weights(self) -> None:
        pass

    def forward(self, x: torch.Tensor, k=None, router_trace=None) -> torch.Tensor:
        """k: None (all), an int or a tensor over x's leading dims; units past k * M are zeroed."""
        h = F.gelu(self.fc1(x), approximate="tanh")
        if k is not None:
            k = torch.as_tensor(k, device=x.device).expand(x.shape[:-1])
            h = h * (torch.arange(self.config.hidden) < k[..., None] * self.config.expert_hidden)
        return self.fc2(h)

    def router_logits(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(*x.shape[:-1], self.config.num_experts)

    def expert_norms(self, x: torch.Tensor) -> torch.Tensor:
        return self.router_logits(x)

    def dense_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.state_dict().items()}

    @staticmethod
    def flops(config: MoEConfig, tokens: int, k: int) -> int:
        return 4 * tokens * config.width * config.expert_hidden * k


@pytest.fixture
def first_k():
    register_sparse_ffn("first_k")(FirstK)
    yield
    SPARSE_FFNS.pop("first_k")


def _var() -> VAR:
    torch.manual_seed(0)
    var = VAR(var_config("debug")).eval()
    with torch.no_grad():  # larger gates than the official init so the FFNs matter
        for b in var.blocks:
            b.ada_lin[-1].weight.normal_(0, 0.05)
        var.head.weight.normal_(0, 0.5)
    return var


def test_toy_variant_runs_through_actvar_by_registration_only(first_k) -> None:
    var = _var()
    scales = len(var.config.patch_nums)
    cfg = ActVARConfig(var=var.config, num_experts=4, experts_k=(4,) * (scales - 1) + (2,), ffn="first_k")
    model = ActVAR.from_dense(var, cfg).eval()
    assert all(isinstance(b.ffn, FirstK) for b in model.var.blocks)
    labels = torch.tensor([0, 3])
    var_input = torch.randn(2, var.config.seq_len - 1, var.config.vae_channels)
    with torch.no_grad():
        sparse, dense = model(labels, var_input), var(labels, var_input)
        last = var.config.scale_bounds[-1][0]
        torch.testing.assert_close(sparse[:, :last], dense[:, :last], atol=1e-5, rtol=1e-5)
        assert (sparse[:, last:] - dense[:, last:]).abs().max() > 1e-3  # half the experts on the last scale
    # FLOPs through the variant's own count: its last scale runs 2 of 4 experts and has no router
    flops = actvar_sampling_flops(cfg, cfg=False, adaln_per_scale=False)
    C, H, n = var.config.dim, var.config.hidden, var.config.scale_sizes[-1]
    expected_cut = var.config.depth * 4 * n * C * H // 2
    assert flops["dense_total"] - flops["total"] == expected_cut
    for name, p in model.to_dense().state_dict().items():
        torch.testing.assert_close(p, var.state_dict()[name])


def test_unknown_variant_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"unknown sparse FFN 'nope'; registered: .*moe"):
        ActVARConfig(var=var_config("debug"), num_experts=4, ffn="nope")
    assert sparse_ffn_class("moe") is MoEFFN


def _three_backends() -> tuple[dict[str, MoEFFN], torch.Tensor]:
    """One FFN (width 32, 8 experts) under each grouped/masked backend with the same random router, and an
    input of 37 tokens."""
    torch.manual_seed(0)
    fc1, fc2 = nn.Linear(32, 128), nn.Linear(128, 32)
    ffns = {b: MoEFFN.from_dense(fc1, fc2, 8, backend=b) for b in ("segment", "padded", "masked")}
    router = torch.randn(8, 32)
    for ffn in ffns.values():
        with torch.no_grad():
            ffn.router.weight.copy_(router)
    return ffns, torch.randn(37, 32)


@pytest.mark.parametrize("grad", [False, True])
def test_masked_backend_equals_grouped(grad: bool) -> None:
    ffns, x = _three_backends()
    k = torch.randint(1, 9, (37,))
    with torch.set_grad_enabled(grad):
        outs = {b: ffn(x, k) for b, ffn in ffns.items()}
    torch.testing.assert_close(outs["masked"], outs["segment"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outs["padded"], outs["segment"], atol=1e-5, rtol=1e-5)
    if grad:  # the router's straight-through gradient flows through the mask as through the grouped kernel
        grads = {}
        for b, out in outs.items():
            (g,) = torch.autograd.grad(out.square().sum(), ffns[b].router.weight)
            grads[b] = g
        torch.testing.assert_close(grads["masked"], grads["segment"], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("grad", [False, True])
def test_backends_agree_at_one_k_per_token_and_under_bf16_autocast(grad: bool) -> None:
    """The sampling path (one int k; without grad the masked form builds its gate from the top-k ids) and
    bf16 autocast, where bf16 expert rows are added into the fp32 output."""
    ffns, x = _three_backends()
    with torch.set_grad_enabled(grad):
        outs = {b: ffn(x, 3) for b, ffn in ffns.items()}
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = {b: ffn(x, 3) for b, ffn in ffns.items()}
    for b in ffns:
        torch.testing.assert_close(outs[b], outs["segment"], atol=1e-5, rtol=1e-5)
        # bf16 matmuls against fp32: within 2e-2 on outputs of mean size 0.1 (max measured 3e-3)
        torch.testing.assert_close(low[b].float(), outs[b], atol=2e-2, rtol=0)


def test_masked_form_zeroes_exactly_the_unchosen_units() -> None:
    torch.manual_seed(0)
    fc1, fc2 = nn.Linear(8, 16), nn.Linear(16, 8)
    gate = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    x = torch.randn(3, 8)
    h = F.gelu(fc1(x), approximate="tanh")
    expected = torch.stack(
        [
            fc2(h[0] * torch.tensor([1.0] * 8 + [0.0] * 8)),
            fc2(h[1] * torch.tensor([0.0] * 8 + [1.0] * 8)),
            fc2(h[2]),
        ]
    )
    torch.testing.assert_close(masked_expert_ffn(x, fc1, fc2, gate), expected)


def test_auto_crossover_follows_expert_width() -> None:
    cpu = torch.device("cpu")
    narrow = MoEConfig(128, 512, 16)  # 32 units per expert: grouped does not pay on CPU
    wide = MoEConfig(1024, 4096, 16)  # 256 units per expert
    assert not grouped_pays(narrow, 12, cpu)
    assert grouped_pays(narrow, 4, cpu)  # a quarter of the experts: grouped pays even at 32 units
    assert grouped_pays(wide, 12, cpu)
    assert grouped_pays(narrow, 12, torch.device("cuda"))
