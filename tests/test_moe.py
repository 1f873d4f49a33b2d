"""MoE view of a dense FFN: exact split/merge, all experts == dense, budget, grouped == reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from argen.nn.moe import MoEConfig, MoEFFN, balanced_kmeans, expert_permutation, grouped_expert_ffn


def _dense_ffn(width: int = 32, seed: int = 0) -> tuple[nn.Linear, nn.Linear]:
    torch.manual_seed(seed)
    fc1, fc2 = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)
    return fc1, fc2


def _dense(fc1: nn.Linear, fc2: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return fc2(F.gelu(fc1(x), approximate="tanh"))


def test_balanced_kmeans_equal_sizes_and_deterministic() -> None:
    x = torch.randn(128, 16)
    a = balanced_kmeans(x, 8, seed=3)
    b = balanced_kmeans(x, 8, seed=3)
    assert torch.equal(a, b)
    assert torch.bincount(a, minlength=8).tolist() == [16] * 8


def test_balanced_kmeans_recovers_planted_clusters() -> None:
    centres = F.normalize(torch.randn(4, 32), dim=1) * 10
    x = centres.repeat_interleave(8, 0) + 0.1 * torch.randn(32, 32)
    labels = balanced_kmeans(x, 4, seed=0)
    for c in range(4):  # every planted group of 8 lands in a single cluster
        assert labels[c * 8 : (c + 1) * 8].unique().numel() == 1


def test_permutation_is_a_permutation() -> None:
    fc1, _ = _dense_ffn()
    perm = expert_permutation(fc1.weight, 8)
    assert torch.equal(torch.sort(perm).values, torch.arange(128))


@pytest.mark.parametrize("num_experts", [1, 4, 16])
def test_split_merge_round_trip_exact(num_experts: int) -> None:
    fc1, fc2 = _dense_ffn()
    moe = MoEFFN.from_dense(fc1, fc2, num_experts)
    assert not torch.equal(moe.perm_H, torch.arange(128)) or num_experts == 1
    back = moe.dense_state()
    assert torch.equal(back["fc1.weight"], fc1.weight) and torch.equal(back["fc1.bias"], fc1.bias)
    assert torch.equal(back["fc2.weight"], fc2.weight) and torch.equal(back["fc2.bias"], fc2.bias)


@pytest.mark.parametrize(("force_grouped", "backend"), [(False, "auto"), (True, "padded"), (True, "segment")])
def test_all_experts_equal_dense(force_grouped: bool, backend: str) -> None:
    fc1, fc2 = _dense_ffn()
    moe = MoEFFN.from_dense(fc1, fc2, 8, backend=backend)
    nn.init.normal_(moe.router.weight)  # routing must not matter when every expert runs
    x = torch.randn(3, 10, 32)
    out = moe(x, 8, force_grouped=force_grouped)
    torch.testing.assert_close(out, _dense(fc1, fc2, x), atol=1e-5, rtol=1e-5)


def test_router_picks_exactly_k_distinct_experts() -> None:
    fc1, fc2 = _dense_ffn()
    moe = MoEFFN.from_dense(fc1, fc2, 8)
    nn.init.normal_(moe.router.weight)
    x = torch.randn(50, 32)
    k_N = torch.randint(1, 9, (50,))
    tok_A, exp_A, weight_A, logits_NE = moe.route(x, k_N)
    assert torch.equal(torch.bincount(tok_A, minlength=50), k_N)
    for n in range(50):
        chosen = exp_A[tok_A == n]
        assert chosen.unique().numel() == k_N[n]
        assert set(chosen.tolist()) == set(torch.topk(logits_NE[n], int(k_N[n])).indices.tolist())
    assert torch.equal(weight_A, torch.ones_like(weight_A))


@pytest.mark.parametrize("backend", ["padded", "segment"])
def test_grouped_equals_per_expert_reference(backend: str) -> None:
    fc1, fc2 = _dense_ffn()
    moe = MoEFFN.from_dense(fc1, fc2, 8, backend=backend)
    nn.init.normal_(moe.router.weight)
    x = torch.randn(40, 32)
    k = 3
    out = moe(x, k)
    # Slow reference: mask the hidden units of unselected experts in the dense computation.
    top = torch.topk(moe.router(x), k, dim=1).indices
    unit_mask = torch.zeros(40, 8).scatter(1, top, 1.0).repeat_interleave(16, dim=1)
    ref = moe.fc2(F.gelu(moe.fc1(x), approximate="tanh") * unit_mask)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("grad", [True, False])
@pytest.mark.parametrize("backend", ["padded", "segment"])
def test_grouped_handles_empty_experts_and_weights(backend: str, grad: bool) -> None:
    w1, b1, w2 = torch.randn(4, 3, 5), torch.randn(4, 3), torch.randn(4, 3, 5)
    x = torch.randn(6, 5)
    tok = torch.tensor([0, 0, 5, 2])
    exp = torch.tensor([1, 1, 1, 3])  # experts 0 and 2 idle, one token twice on the same expert
    wt = torch.tensor([1.0, 0.5, 2.0, 1.0])
    with torch.set_grad_enabled(grad):  # the inference path writes into one buffer
        out = grouped_expert_ffn(x, w1, b1, w2, tok, exp, wt, backend)
    ref = torch.zeros(6, 5)
    for t, e, w in zip(tok.tolist(), exp.tolist(), wt.tolist(), strict=True):
        ref[t] += w * (F.gelu(x[t] @ w1[e].T + b1[e], approximate="tanh") @ w2[e])
    torch.testing.assert_close(out, ref)


def test_straight_through_reaches_router() -> None:
    fc1, fc2 = _dense_ffn()
    moe = MoEFFN.from_dense(fc1, fc2, 8)
    moe(torch.randn(20, 32), 2).square().sum().backward()
    assert moe.router.weight.grad is not None and moe.router.weight.grad.abs().sum() > 0


def test_expert_norms_sum_to_dense_output() -> None:
    fc1, fc2 = _dense_ffn()
    moe = MoEFFN.from_dense(fc1, fc2, 8)
    x = torch.randn(7, 32)
    norms = moe.expert_norms(x)
    assert norms.shape == (7, 8)
    # Each expert alone (k=1 picking that expert) has the output norm reported.
    w1, b1, w2 = moe.expert_weights()
    solo = F.gelu(x @ w1[2].T + b1[2], approximate="tanh") @ w2[2]
    torch.testing.assert_close(norms[:, 2], solo.norm(dim=-1))


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="divide"):
        MoEConfig(width=8, hidden=32, num_experts=5)
