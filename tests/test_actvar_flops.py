"""ActVAR analytic sampling FLOPs: equal to torch's counter on the real sparse sampler; all-on == dense."""

from __future__ import annotations

import pytest
import torch

from argen.models.actvar import ActVAR, ActVARConfig, actvar_config
from argen.models.flops import actvar_sampling_flops, measured_flops, var_sampling_flops
from argen.models.var import VAR, var_config
from argen.sampling.logits import SamplingConfig
from argen.sampling.next_scale import NextScaleConfig, sample_next_scale
from argen.tokenizers.multiscale import MultiScaleVQVAE, msvq_config


def test_all_on_budget_equals_dense_var_count() -> None:
    cfg = ActVARConfig(var=var_config("d16"))
    out = actvar_sampling_flops(cfg)
    assert out["total"] == out["dense_total"] == var_sampling_flops(cfg.var)["total"]
    assert out["saving"] == 0.0


def test_presets_save_about_a_fifth() -> None:
    for name in ("d16", "d20", "d24", "d30"):
        out = actvar_sampling_flops(actvar_config(name))
        assert 0.19 < out["saving"] < 0.25, (name, out["saving"])
        assert out["per_scale"][:7] == out["dense_per_scale"][:7]  # only the last three scales are sparse


@pytest.mark.parametrize("guided", [False, True])
def test_analytic_equals_torch_counter(guided: bool) -> None:
    torch.manual_seed(0)
    vae = MultiScaleVQVAE(msvq_config("debug")).eval()  # a small decoder keeps the counted run fast
    vc = vae.config
    var = VAR(
        var_config("debug", vocab_size=vc.vocab_size, vae_channels=vc.z_channels, patch_nums=vc.patch_nums)
    )
    rest = (1,) * (len(vc.patch_nums) - 2)
    cfg = ActVARConfig(
        var=var.eval().config,
        num_experts=4,
        experts_k=(*(4 * r for r in rest), 3, 2),
        keep_ratio=(*(1.0 * r for r in rest), 0.5, 0.3),
        gate_layers=(1,),
        expert_backend="segment",
    )
    model = ActVAR.from_dense(var, cfg).eval()
    with torch.no_grad():
        for block in model.var.blocks:
            block.ffn.router.weight.normal_()
    labels = torch.tensor([0, 4])
    sampling = (
        SamplingConfig(cfg_scale=1.5, cfg_schedule="linear", top_k=1) if guided else SamplingConfig(top_k=1)
    )
    run = NextScaleConfig(sampling)
    # The VQVAE's FLOPs (phi convs, decoder) are not in the analytic count: take them from the dense VAR run,
    # whose analytic count is verified against the same counter in test_var_sampling.
    dense_analytic = var_sampling_flops(var.config, batch=2, cfg=guided, adaln_per_scale=False)["total"]
    vae_flops = measured_flops(sample_next_scale, var, vae, labels, run) - dense_analytic
    measured = measured_flops(sample_next_scale, model.sampling_view(), vae, labels, run)
    analytic = actvar_sampling_flops(cfg, batch=2, cfg=guided, adaln_per_scale=False)
    assert measured - vae_flops == analytic["total"]
    assert analytic["saving"] > 0.1
