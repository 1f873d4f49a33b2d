"""VAR model: official fixture numerics, official key/shape lists, parameter counts, loader, mask, presets."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from argen.models.checkpoints import CheckpointError, load_model, load_strict, save_model
from argen.models.var import (
    PRESETS,
    VAR,
    VARConfig,
    adapt_official_var_state,
    load_official_var,
    load_var,
    num_params,
    var_config,
)
from argen.nn.masks import group_mask

# Published parameter counts of the official checkpoints (VAR paper, Table 1), in millions.
PUBLISHED_PARAMS_M = {"d16": 310, "d20": 600, "d24": 1030, "d30": 2010}


def fixture_config(path) -> VARConfig:
    meta = json.loads(safe_open(str(path), "pt").metadata()["config"])
    return VARConfig(
        depth=meta["depth"],
        width=meta["embed_dim"],
        heads=meta["num_heads"],
        vocab_size=meta["V"],
        vae_channels=meta["Cvae"],
        patch_nums=tuple(meta["patch_nums"]),
        num_classes=meta["num_classes"],
        attn_l2_norm=meta["attn_l2_norm"],
        shared_aln=meta["shared_aln"],
    )


def fixture_var(fixtures_dir) -> tuple[VAR, dict[str, torch.Tensor]]:
    path = fixtures_dir / "var_ref_a.safetensors"
    tensors = load_file(str(path))
    model = VAR(fixture_config(path))
    state = {k.removeprefix("var."): v for k, v in tensors.items() if k.startswith("var.")}
    load_strict(model, adapt_official_var_state(state), source=str(path))
    return model.eval(), tensors


def test_fixture_teacher_forcing_logits(fixtures_dir):
    model, t = fixture_var(fixtures_dir)
    with torch.no_grad():
        logits = model(t["in.labels"], t["out.var_input"])
    assert logits.shape == t["out.logits"].shape
    torch.testing.assert_close(logits, t["out.logits"], atol=1e-4, rtol=0)


def test_load_official_pth_with_and_without_derivable_buffers(fixtures_dir, tmp_path):
    _, t = fixture_var(fixtures_dir)
    state = {k.removeprefix("var."): v for k, v in t.items() if k.startswith("var.")}
    assert any(k.endswith("zero_k_bias") for k in state) and "attn_bias_for_masking" in state
    torch.save(state, tmp_path / "with_buffers.pth")
    torch.save(adapt_official_var_state(state), tmp_path / "without_buffers.pth")
    cfg = fixture_config(fixtures_dir / "var_ref_a.safetensors")
    for name in ("with_buffers.pth", "without_buffers.pth"):
        loaded = load_official_var(tmp_path / name, cfg)
        with torch.no_grad():
            torch.testing.assert_close(
                loaded(t["in.labels"], t["out.var_input"]), t["out.logits"], atol=1e-4, rtol=0
            )
    broken = dict(state)
    broken.pop("head.weight")
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match=r"head\.weight"):
        load_official_var(tmp_path / "broken.pth", cfg)
    with pytest.raises(CheckpointError):
        load_official_var(tmp_path / "with_buffers.pth", var_config("debug"))


def test_module_state_has_no_derivable_buffers():
    state = VAR(var_config("debug")).state_dict()
    assert set(adapt_official_var_state(state)) == set(state)
    assert not [k for k in state if "zero_k_bias" in k or k in ("lvl_1L", "attn_bias_for_masking")]


@pytest.mark.parametrize("name", ["d16", "d20", "d24", "d30"])
def test_official_keys_shapes_and_param_counts(fixtures_dir, name):
    official = json.loads((fixtures_dir / "var_official_keys.json").read_text())[f"var_{name}"]
    expected = adapt_official_var_state({k: torch.empty(0) for k in official})
    with torch.device("meta"):
        model = VAR(var_config(name))
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert sorted(ours) == sorted(expected)
    assert all(ours[k] == official[k] for k in ours), [k for k in ours if ours[k] != official[k]]
    count_m = num_params(model) / 1e6
    assert abs(count_m - PUBLISHED_PARAMS_M[name]) / PUBLISHED_PARAMS_M[name] < 0.005, count_m
    # the official count includes every parameter of the file except the derivable buffers
    assert num_params(model) == sum(torch.Size(s).numel() for k, s in official.items() if k in expected)


def test_block_causal_mask_structure():
    model = VAR(var_config("debug"))
    cfg = model.config
    mask = model.block_causal_mask(cfg.seq_len)
    ids = model.scale_ids()
    assert torch.equal(mask, group_mask(ids))
    assert torch.equal(mask, ids[None, :] <= ids[:, None])  # keys of own and coarser scales only
    for begin, end in cfg.scale_bounds:
        assert mask[begin:end, begin:end].all()  # a scale sees all of itself
        assert not mask[begin:end, end:].any()  # and nothing finer


def test_teacher_forcing_is_block_causal_and_prefix_consistent():
    model = VAR(var_config("debug")).eval()
    cfg = model.config
    with torch.no_grad():
        for b in model.blocks:
            b.ada_lin[-1].weight.normal_(0, 0.05)
    labels = torch.tensor([3, 1])
    x = torch.randn(2, cfg.seq_len - 1, cfg.vae_channels)
    with torch.no_grad():
        full = model(labels, x)
        for _, end in cfg.scale_bounds[:-1]:
            prefix = model(labels, x[:, : end - 1])
            torch.testing.assert_close(prefix, full[:, :end], atol=1e-5, rtol=0)
            x2 = x.clone()
            x2[:, end - 1 :] += 1.0  # change finer scales only
            changed = model(labels, x2)
            torch.testing.assert_close(changed[:, :end], full[:, :end], atol=1e-5, rtol=0)
            assert not torch.allclose(changed[:, end:], full[:, end:])
        with pytest.raises(ValueError, match="scale boundary"):
            model(labels, x[:, :2])


@pytest.mark.parametrize(("shared_aln", "l2_norm"), [(False, True), (True, True), (False, False)])
def test_every_parameter_gets_a_gradient(shared_aln, l2_norm):
    cfg = var_config("debug", shared_aln=shared_aln, attn_l2_norm=l2_norm, drop_path_rate=0.1)
    model = VAR(cfg).train()
    cfg = model.config
    labels = torch.tensor([0, cfg.num_classes])
    logits = model(labels, torch.randn(2, cfg.seq_len - 1, cfg.vae_channels))
    logits.logsumexp(-1).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing
    if shared_aln:
        keys = model.state_dict().keys()
        assert "shared_ada_lin.1.weight" in keys and "blocks.0.ada_gss" in keys


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets(name):
    cfg = var_config(name)
    assert cfg.dim % cfg.num_heads == 0 and cfg.seq_len == sum(p * p for p in cfg.patch_nums)
    if name in ("debug", "fmnist"):  # small enough to run on CPU in a test
        model = VAR(cfg).eval()
        end = cfg.scale_bounds[min(5, len(cfg.patch_nums) - 1)][1]  # a prefix of scales keeps it fast
        with torch.no_grad():
            logits = model(torch.tensor([1]), torch.randn(1, end - 1, cfg.vae_channels))
        assert logits.shape == (1, end, cfg.vocab_size) and torch.isfinite(logits).all()
    else:
        with torch.device("meta"):
            model = VAR(cfg)
        assert model.pos_1LC.shape == (1, cfg.seq_len, cfg.dim)
    if name in PUBLISHED_PARAMS_M:
        assert (cfg.dim, cfg.num_heads) == (64 * cfg.depth, cfg.depth)


def test_config_validation_and_argen_roundtrip(tmp_path):
    with pytest.raises(ValueError, match="divisible"):
        VARConfig(depth=2, width=100, heads=3)
    with pytest.raises(ValueError, match="increasing"):
        VARConfig(patch_nums=(1, 3, 2))
    with pytest.raises(ValueError, match="unknown VAR preset"):
        var_config("d99")
    model = VAR(var_config("debug")).eval()
    path = save_model(model, tmp_path / "var_debug")
    loaded = load_model(path)
    assert loaded.kind == "var" and loaded.config == model.config
    assert load_var(path).config == model.config
    with pytest.raises(ValueError, match="preset"):
        load_var(tmp_path / "official.pth")
    x = torch.randn(1, model.config.seq_len - 1, model.config.vae_channels)
    with torch.no_grad():
        torch.testing.assert_close(loaded(torch.tensor([2]), x), model(torch.tensor([2]), x), atol=0, rtol=0)
