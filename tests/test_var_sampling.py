"""VAR sampling: static-cache sampler == recompute reference, CFG ramp, official greedy sample, and the
analytic FLOPs == torch's counter."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn

from argen.models.checkpoints import load_strict
from argen.models.var import VAR, var_config
from argen.sampling.logits import SamplingConfig, sample_keys
from argen.sampling.next_scale import NextScaleConfig, sample_next_scale, sample_next_scale_reference


class StubVQVAE(nn.Module):
    """Multi-scale VQVAE stand-in with the official residual accumulation (bicubic up, phi, area down)."""

    def __init__(self, vocab: int, channels: int, patch_nums: tuple[int, ...]) -> None:
        super().__init__()
        self.config = SimpleNamespace(patch_nums=patch_nums, vocab_size=vocab, z_channels=channels)
        self.quantize = nn.Module()
        self.quantize.embedding = nn.Embedding(vocab, channels)
        self.phi = nn.Conv2d(channels, channels, 3, padding=1)
        self.dec = nn.Conv2d(channels, 1, 1)

    def next_autoregressive_input(self, si, num_scales, f_hat, h_BChw):
        side = self.config.patch_nums[-1]
        if si == num_scales - 1:
            f_hat = f_hat + self.phi(h_BChw)
            return f_hat, f_hat
        f_hat = f_hat + self.phi(F.interpolate(h_BChw, size=(side, side), mode="bicubic"))
        nxt = self.config.patch_nums[si + 1]
        return f_hat, F.interpolate(f_hat, size=(nxt, nxt), mode="area")

    def idxBl_to_var_input(self, idx_Bl):
        B, pns = idx_Bl[0].shape[0], self.config.patch_nums
        f_hat = torch.zeros(B, self.config.z_channels, pns[-1], pns[-1])
        out = []
        for si in range(len(pns) - 1):
            h = self.quantize.embedding(idx_Bl[si]).transpose(1, 2).reshape(B, -1, pns[si], pns[si])
            f_hat, nxt = self.next_autoregressive_input(si, len(pns), f_hat, h)
            out.append(nxt.flatten(2).transpose(1, 2))
        return torch.cat(out, dim=1)

    def fhat_to_img(self, f_hat):
        return torch.tanh(self.dec(f_hat))


def _pair(preset: str = "debug", **overrides) -> tuple[VAR, StubVQVAE]:
    var = VAR(var_config(preset, **overrides)).eval()
    # Larger random gates than the official init so every block changes the logits.
    with torch.no_grad():
        for b in var.blocks:
            (b.ada_gss if var.config.shared_aln else b.ada_lin[-1].weight).normal_(0, 0.05)
        var.head.weight.normal_(0, 0.5)
    c = var.config
    return var, StubVQVAE(c.vocab_size, c.vae_channels, c.patch_nums).eval()


SAMPLINGS = [
    SamplingConfig(cfg_scale=1.5, cfg_schedule="linear", top_k=1),  # greedy, official CFG ramp
    SamplingConfig(cfg_scale=2.0, cfg_schedule="linear", top_k=20, top_p=0.9, temperature=1.2, seed=3),
    SamplingConfig(cfg_scale=0.0, cfg_schedule="linear", top_k=0, seed=1),  # ramp of 0: no guidance batch
]


@pytest.mark.parametrize(("sampling", "shared_aln"), [(s, False) for s in SAMPLINGS] + [(SAMPLINGS[1], True)])
def test_cached_sampler_equals_reference(sampling, shared_aln):
    var, vae = _pair(shared_aln=shared_aln)
    labels = torch.tensor([1, 2, 7])
    cfg = NextScaleConfig(sampling=sampling, progression=True)
    fast = sample_next_scale(var, vae, labels, cfg)
    ref = sample_next_scale_reference(var, vae, labels, cfg)
    for a, b in zip(fast.tokens, ref.tokens, strict=True):
        assert torch.equal(a, b)
    torch.testing.assert_close(fast.images, ref.images, atol=1e-5, rtol=0)
    assert fast.images.shape == (3, 1, 4, 4) and fast.images.min() >= 0 and fast.images.max() <= 1
    assert len(fast.progression) == len(var.config.patch_nums)
    torch.testing.assert_close(fast.progression[-1], fast.images, atol=0, rtol=0)
    assert all(b.attn.cache is None for b in var.blocks)  # caches live only inside the sampler


def test_sample_i_depends_on_its_key_not_on_the_batch():
    var, vae = _pair()
    labels = torch.tensor([1, 2, 7])
    cfg = NextScaleConfig(sampling=SAMPLINGS[1])
    keys = sample_keys(3, [10, 11, 12])
    batch = sample_next_scale(var, vae, labels, cfg, keys)
    for i in range(3):
        one = sample_next_scale(var, vae, labels[i : i + 1], cfg, keys[i : i + 1])
        for a, b in zip(one.tokens, batch.tokens, strict=True):
            assert torch.equal(a, b[i : i + 1])
    other = sample_next_scale(var, vae, labels, cfg, sample_keys(4, [10, 11, 12]))
    assert not torch.equal(other.tokens[-1], batch.tokens[-1])


def test_cache_is_static_and_preallocated():
    var, vae = _pair()
    seen = []
    step = var.step

    def spy(si, x, cond, mods):
        cache = var.blocks[0].attn.cache
        seen.append((cache.k_BHSD.data_ptr(), tuple(cache.k_BHSD.shape)))
        return step(si, x, cond, mods)

    var.step = spy
    sample_next_scale(var, vae, torch.tensor([0, 1]), NextScaleConfig(SAMPLINGS[0]))
    cfg = var.config
    assert len(seen) == len(cfg.patch_nums)
    assert len({ptr for ptr, _ in seen}) == 1  # one buffer, written in place at every scale
    assert seen[0][1] == (4, cfg.num_heads, cfg.seq_len, cfg.dim // cfg.num_heads)  # 2B rows with CFG


def test_cfg_ramp_starts_unguided():
    var, vae = _pair()
    labels = torch.tensor([4, 5])
    guided = sample_next_scale(var, vae, labels, NextScaleConfig(SAMPLINGS[0]))
    unguided = SamplingConfig(cfg_scale=0.0, cfg_schedule="linear", top_k=1)
    plain = sample_next_scale(var, vae, labels, NextScaleConfig(unguided))
    assert torch.equal(guided.tokens[0], plain.tokens[0])  # ratio 0 at the first scale: scale 1 + 0
    assert any(not torch.equal(a, b) for a, b in zip(guided.tokens[1:], plain.tokens[1:], strict=True))


def test_official_greedy_sample(fixtures_dir):
    multiscale = pytest.importorskip("argen.tokenizers.multiscale")
    from test_var_model import fixture_var

    var, t = fixture_var(fixtures_dir)
    meta = json.loads(safe_open(str(fixtures_dir / "var_ref_a.safetensors"), "pt").metadata()["config"])
    vae = multiscale.MultiScaleVQVAE(multiscale.msvq_config("var_ref_a"))
    load_strict(vae, {k.removeprefix("vae."): v for k, v in t.items() if k.startswith("vae.")})
    vae.eval()
    with torch.no_grad():
        var_input = vae.idxBl_to_var_input([t[f"out.idx.{i}"] for i in range(4)])
    torch.testing.assert_close(var_input, t["out.var_input"], atol=1e-5, rtol=0)
    sampling = SamplingConfig(cfg_scale=meta["cfg"], cfg_schedule="linear", top_k=meta["top_k"])
    for sampler in (sample_next_scale, sample_next_scale_reference):
        out = sampler(var, vae, t["in.labels"], NextScaleConfig(sampling))
        torch.testing.assert_close(out.images, t["out.sample_greedy"], atol=1e-4, rtol=0)


def test_analytic_flops_match_torch_counter():
    from argen.models.flops import measured_flops, var_sampling_flops

    var, vae = _pair()
    vae.phi = nn.Identity()  # the 1x1 decoder conv stays: the VQVAE's only counted op, subtracted below
    side, channels = var.config.patch_nums[-1], var.config.vae_channels
    labels = torch.tensor([1, 2])
    for sampling, guided in ((SAMPLINGS[0], True), (SAMPLINGS[2], False)):
        measured = measured_flops(sample_next_scale, var, vae, labels, NextScaleConfig(sampling))
        decoder = 2 * len(labels) * side * side * channels
        analytic = var_sampling_flops(var.config, batch=len(labels), cfg=guided, adaln_per_scale=False)
        assert measured - decoder == analytic["total"]
        assert sum(analytic["per_scale"]) == analytic["total"] == sum(analytic["parts"].values())


def test_official_convention_flops_of_published_models():
    from argen.models.flops import var_sampling_flops

    # VAR paper: about 601 / 1151 / 1964 / 3790 GFLOPs per 256px image with CFG (AdaLN recomputed per scale)
    for name, gflops in (("d16", 601), ("d20", 1151), ("d24", 1964), ("d30", 3790)):
        total = var_sampling_flops(var_config(name))["total"] / 1e9
        assert abs(total - gflops) / gflops < 0.002, (name, total)


@pytest.mark.slow
def test_compiled_step_captures_and_matches():
    from torch._dynamo.utils import counters

    counters.clear()
    var, vae = _pair()
    labels = torch.tensor([1, 2])
    eager = sample_next_scale(var, vae, labels, NextScaleConfig(SAMPLINGS[1]))
    cfg = NextScaleConfig(SAMPLINGS[1], compile=True, compile_backend="aot_eager")
    for _ in range(2):  # the second call must reuse the per-scale graphs
        out = sample_next_scale(var, vae, labels, cfg)
        assert all(torch.equal(a, b) for a, b in zip(out.tokens, eager.tokens, strict=True))
        torch.testing.assert_close(out.images, eager.images, atol=1e-5, rtol=0)
    assert counters["stats"]["unique_graphs"] == len(var.config.patch_nums)
