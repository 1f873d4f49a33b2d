"""ActVAR: all-on == dense VAR (official fixture too), exact export, budgets, sparse == masked-dense
reference, cached sparse sampler == uncached, all-on sampler == VAR sampler."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open

from argen.models.actvar import PRESETS, ActVAR, ActVARConfig, actvar_config, kept_count
from argen.models.checkpoints import drop_keys, load_model, load_strict, save_model
from argen.models.var import DERIVED_BUFFERS, VAR, VARConfig, var_config
from argen.sampling.logits import SamplingConfig
from argen.sampling.next_scale import NextScaleConfig, sample_next_scale, sample_next_scale_reference
from argen.tokenizers.multiscale import MultiScaleVQVAE, msvq_config


def _random_var(seed: int = 0, **overrides) -> VAR:
    torch.manual_seed(seed)
    var = VAR(var_config("debug", **overrides)).eval()
    with torch.no_grad():  # larger gates than the official init so every block and token matters
        for b in var.blocks:
            b.ada_lin[-1].weight.normal_(0, 0.05)
        var.head.weight.normal_(0, 0.5)
    return var


def _randomise_sparse_parts(model: ActVAR) -> None:
    with torch.no_grad():
        for block in model.var.blocks:
            block.ffn.router.weight.normal_(0, 1.0)
        for sel in model.selectors.values():
            sel.up.weight.normal_(0, 0.1)


def _inputs(cfg: VARConfig, batch: int = 3, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, cfg.num_classes + 1, (batch,), generator=g)
    var_input = torch.randn(batch, cfg.seq_len - cfg.scale_sizes[0], cfg.vae_channels, generator=g)
    return labels, var_input


def test_presets_validate_and_debug_builds() -> None:
    for name in PRESETS:
        cfg = actvar_config(name)
        assert len(cfg.experts_k) == len(cfg.var.patch_nums) == len(cfg.keep_ratio)
    model = ActVAR(actvar_config("debug"))
    assert model.kind == "actvar" and len(model.selectors) == model.config.var.depth


def test_config_errors_say_what_to_do() -> None:
    var_cfg = var_config("debug")
    with pytest.raises(ValueError, match="experts_k"):
        ActVARConfig(var=var_cfg, num_experts=4, experts_k=(4, 4, 5, 1))
    with pytest.raises(ValueError, match="keep_ratio"):
        ActVARConfig(var=var_cfg, num_experts=4, keep_ratio=(1.0, 0.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="divide"):
        ActVARConfig(var=var_cfg, num_experts=7)


def test_all_on_equals_dense_random() -> None:
    var = _random_var()
    model = ActVAR.from_dense(var, ActVARConfig(var=var.config, num_experts=4)).eval()
    _randomise_sparse_parts(model)  # routers/adapters must not matter with everything on
    labels, var_input = _inputs(var.config)
    with torch.no_grad():
        torch.testing.assert_close(model(labels, var_input), var(labels, var_input), atol=1e-5, rtol=1e-5)


def test_all_on_equals_official_var_logits(fixtures_dir) -> None:
    path = fixtures_dir / "var_ref_a.safetensors"
    with safe_open(str(path), "pt") as f:
        t = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    var = VAR(
        VARConfig(
            depth=2,
            width=128,
            heads=2,
            vocab_size=64,
            vae_channels=8,
            patch_nums=(1, 2, 3, 4),
            num_classes=10,
        )
    )
    state = {k[4:]: v for k, v in t.items() if k.startswith("var.")}
    load_strict(var, drop_keys(state, DERIVED_BUFFERS), "var_ref_a")
    model = ActVAR.from_dense(var.eval(), ActVARConfig(var=var.config, num_experts=8)).eval()
    with torch.no_grad():
        logits = model(t["in.labels"], t["out.var_input"])
    torch.testing.assert_close(logits, t["out.logits"], atol=1e-5, rtol=1e-5)


def test_to_dense_round_trips_exactly_and_save_load(tmp_path) -> None:
    var = _random_var()
    model = ActVAR.from_dense(var, actvar_config("debug", var=var.config))
    dense = model.to_dense()
    ref = var.state_dict()
    assert set(dense.state_dict()) == set(ref)
    assert all(torch.equal(v, ref[k]) for k, v in dense.state_dict().items())
    _randomise_sparse_parts(model)
    loaded = load_model(save_model(model, tmp_path / "actvar"))
    labels, var_input = _inputs(var.config)
    with torch.no_grad():
        torch.testing.assert_close(loaded(labels, var_input), model.eval()(labels, var_input))


def test_budget_exact_experts_and_tokens() -> None:
    var = _random_var()
    cfg = ActVARConfig(
        var=var.config, num_experts=4, experts_k=(4, 3, 2, 1), keep_ratio=(1.0, 0.5, 0.6, 0.25)
    )
    model = ActVAR.from_dense(var, cfg).eval()
    _randomise_sparse_parts(model)
    seen = []
    routes = []
    for block in model.var.blocks:
        block.ffn.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[1]))
        orig = block.ffn.route
        block.ffn.route = lambda x, k, orig=orig: routes.append(orig(x, k)) or routes[-1]
    labels, var_input = _inputs(var.config)
    with torch.no_grad():
        model(labels, var_input)
    expected_tokens = sum(
        kept_count(r, n) if r < 1 else n for r, n in zip(cfg.keep_ratio, cfg.var.scale_sizes, strict=True)
    )
    assert expected_tokens == 1 + math.ceil(0.5 * 4) + math.ceil(0.6 * 9) + math.ceil(0.25 * 16)
    assert seen == [expected_tokens] * var.config.depth
    per_scale_k = [
        k
        for k, r, n in zip(cfg.experts_k, cfg.keep_ratio, cfg.var.scale_sizes, strict=True)
        for _ in range(kept_count(r, n) if r < 1 else n)
    ]
    for tok_A, exp_A, _, _ in routes:
        counts = torch.bincount(tok_A, minlength=3 * expected_tokens).view(3, -1)
        assert torch.equal(counts, torch.tensor(per_scale_k).expand(3, -1))
        pairs = torch.stack((tok_A, exp_A), 1)
        assert pairs.unique(dim=0).shape[0] == pairs.shape[0]  # k distinct experts per token


def _masked_dense_reference(model: ActVAR, labels: torch.Tensor, var_input: torch.Tensor) -> torch.Tensor:
    """Slow oracle: every token and expert computed, then masked with the same selections."""
    var, cfg = model.var, model.config
    cond = var.class_emb(labels)
    lvl_pos = var.lvl_pos()
    x = torch.cat((var.first_scale_input(cond, lvl_pos), var.word_embed(var_input) + lvl_pos[:, 1:]), 1)
    mask = var.block_causal_mask(x.shape[1])
    sizes = cfg.var.scale_sizes
    k_L = torch.repeat_interleave(torch.tensor(cfg.experts_k), torch.tensor(sizes))
    for i, (block, mods) in enumerate(zip(var.blocks, var.block_mods(cond), strict=True)):
        g1, g2, s1, s2, sh1, sh2 = mods
        h1 = block.ln_wo_grad(x) * (1 + s1) + sh1
        sel = model.selectors[str(i)]
        score = sel.score(h1)
        keep = torch.zeros_like(score, dtype=torch.bool)
        for s, (begin, end) in enumerate(cfg.var.scale_bounds):
            n = kept_count(cfg.keep_ratio[s], end - begin)
            keep[:, begin:end].scatter_(1, torch.topk(score[:, begin:end], n, dim=1).indices, True)
        x_mid = x + block.attn_branch(x, mods, mask)
        h2 = block.ln_wo_grad(x_mid) * (1 + s2) + sh2
        ranks = block.ffn.router(h2).argsort(-1, descending=True).argsort(-1)
        unit_mask = (
            (ranks < k_L[None, :, None]).float().repeat_interleave(cfg.var.hidden // cfg.num_experts, -1)
        )
        ffn = block.ffn.fc2(F.gelu(block.ffn.fc1(h2), approximate="tanh") * unit_mask)
        x = torch.where(keep[..., None], x_mid + ffn * g2, x + sel.reconstruct(h1, g1 + g2))
    return var.logits(x, cond)


@pytest.mark.parametrize("backend", ["padded", "segment", "masked", "auto"])
def test_sparse_equals_masked_dense_reference(backend: str) -> None:
    var = _random_var()
    cfg = ActVARConfig(
        var=var.config,
        num_experts=4,
        experts_k=(4, 2, 3, 1),
        keep_ratio=(1.0, 0.75, 0.5, 0.3),
        expert_backend=backend,
    )
    model = ActVAR.from_dense(var, cfg).eval()
    _randomise_sparse_parts(model)
    labels, var_input = _inputs(var.config)
    with torch.no_grad():
        out = model(labels, var_input)
        ref = _masked_dense_reference(model, labels, var_input)
        assert (out - var(labels, var_input)).abs().max() > 1e-2  # the sparsity really changes the output
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_sparse_backward_reaches_every_trainable_part() -> None:
    var = _random_var()
    model = ActVAR.from_dense(var, actvar_config("debug", var=var.config)).train()
    _randomise_sparse_parts(model)
    labels, var_input = _inputs(var.config)
    model(labels, var_input).logsumexp(-1).mean().backward()
    for name, p in model.named_parameters():
        if "router" in name or "selectors" in name:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def _vqvae() -> MultiScaleVQVAE:
    torch.manual_seed(5)
    return MultiScaleVQVAE(msvq_config("var_ref_a")).eval()


def test_cached_sparse_sampler_equals_uncached() -> None:
    var = _random_var()
    model = ActVAR.from_dense(var, actvar_config("debug", var=var.config)).eval()
    _randomise_sparse_parts(model)
    cfg = NextScaleConfig(sampling=SamplingConfig(cfg_scale=1.5, cfg_schedule="linear", top_k=1))
    labels = torch.tensor([0, 3])
    fast = sample_next_scale(model.sampling_view(), _vqvae(), labels, cfg)
    slow = sample_next_scale_reference(model.sampling_view(), _vqvae(), labels, cfg)
    for a, b in zip(fast.tokens, slow.tokens, strict=True):
        assert torch.equal(a, b)
    dense = sample_next_scale(var, _vqvae(), labels, cfg)
    assert any(not torch.equal(a, b) for a, b in zip(fast.tokens, dense.tokens, strict=True))


def test_all_on_sampler_equals_var_sampler() -> None:
    var = _random_var()
    model = ActVAR.from_dense(var, ActVARConfig(var=var.config, num_experts=4)).eval()
    _randomise_sparse_parts(model)
    cfg = NextScaleConfig(sampling=SamplingConfig(cfg_scale=1.5, cfg_schedule="linear", top_k=1))
    labels = torch.tensor([1, 2, 7])
    ours = sample_next_scale(model.sampling_view(), _vqvae(), labels, cfg)
    ref = sample_next_scale(var, _vqvae(), labels, cfg)
    for a, b in zip(ours.tokens, ref.tokens, strict=True):
        assert torch.equal(a, b)
    torch.testing.assert_close(ours.images, ref.images)
