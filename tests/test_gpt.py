"""GPT backbone: presets vs official key lists, masks (perturbation), cached == uncached, training, I/O."""

from __future__ import annotations

import json

import pytest
import torch

from argen.models.checkpoints import CheckpointError, load_model, save_model
from argen.models.gpt import GPT, PRESETS, GPTConfig, gpt_config, load_official_gpt
from argen.orders import build_order
from argen.sampling.ar import GenerationProcess
from argen.sampling.logits import SamplingConfig, cfg_combine

OFFICIAL = {
    "B": ("llamagen", "GPT-B"),
    "L": ("llamagen", "GPT-L"),
    "XL": ("llamagen", "GPT-XL"),
    "ear_B": ("ear", "EAR-B"),
    "ear_L": ("ear", "EAR-L"),
}


def _model(preset: str, **kw) -> GPT:
    torch.manual_seed(0)
    model = GPT(gpt_config(preset, **kw))
    model.init_weights()
    with torch.no_grad():  # the zero-initialised head would make every logit equal
        model.output.weight.normal_(std=0.5)
    return model.eval()


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_build_on_meta(preset):
    with torch.device("meta"):
        model = GPT(gpt_config(preset))
    assert sum(p.numel() for p in model.parameters()) > 0
    assert (model.mask_token is not None) == (model.config.mode == "next_any")


@pytest.mark.parametrize("preset", sorted(OFFICIAL))
def test_preset_keys_and_shapes_match_official(preset, fixtures_dir):
    family, name = OFFICIAL[preset]
    ref = json.loads((fixtures_dir / f"{family}_official_keys.json").read_text())[name]
    kw = {"num_classes": 1000}
    with torch.device("meta"):
        model = GPT(gpt_config(preset, **kw))
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == ref


@pytest.mark.parametrize(("preset", "millions"), [("ear_B", 140.8), ("ear_L", 477.3), ("ear_XL", 1107.9)])
def test_ear_parameter_counts(preset, millions):
    with torch.device("meta"):
        model = GPT(gpt_config(preset))
    assert abs(sum(p.numel() for p in model.parameters()) / 1e6 - millions) < 0.1


def test_config_validation():
    with pytest.raises(ValueError, match="divisible by 4"):
        GPTConfig(dim=60, n_head=2)
    with pytest.raises(ValueError, match="mode"):
        GPTConfig(mode="diffusion")


@pytest.mark.parametrize("rope_mode", ["grid", "sequence"])
def test_next_any_mask_slots_never_see_their_own_or_later_groups(rope_mode):
    model = _model("debug", rope_mode=rope_mode)
    order = build_order("spiral", 4, "rings")  # groups: 1, 3, 5, 7 tokens
    tokens = torch.randint(0, 64, (2, 16))
    labels = torch.tensor([1, 2])
    base = model(tokens, labels, order)
    bounds = order.bounds
    for g in range(1, order.num_steps):
        changed = tokens.clone()
        changed[:, bounds[g] :] = (changed[:, bounds[g] :] + 7) % 64  # perturb group g and later
        out = model(changed, labels, order)
        assert torch.allclose(out[:, : bounds[g + 1]], base[:, : bounds[g + 1]], atol=1e-6)
        if bounds[g + 1] < 16:  # ...while later groups do see them
            assert not torch.allclose(out[:, bounds[g + 1] :], base[:, bounds[g + 1] :], atol=1e-4)


def test_next_token_is_causal():
    model = _model("debug_raster")
    order = build_order("raster", 4)
    tokens = torch.randint(0, 64, (2, 16))
    labels = torch.tensor([3, 4])
    base = model(tokens, labels, order)
    for j in (0, 5, 14):
        changed = tokens.clone()
        changed[:, j] = (changed[:, j] + 1) % 64
        out = model(changed, labels, order)
        assert torch.allclose(out[:, : j + 1], base[:, : j + 1], atol=1e-6)
        assert not torch.allclose(out[:, j + 1 :], base[:, j + 1 :], atol=1e-4)


CASES = [
    ("debug", "spiral", "sides", "grid"),
    ("debug", "spiral", "rings", "sequence"),
    ("debug", "spiral", "tokens:1", "grid"),
    ("debug", "spiral", 3, "grid"),
    ("debug", "random", 5, "grid"),
    ("debug_raster", "raster", None, "sequence"),
    ("debug_raster", "spiral", None, "grid"),
]


@pytest.mark.parametrize(("preset", "order_name", "schedule", "rope_mode"), CASES)
def test_cached_sampling_equals_uncached_forward(preset, order_name, schedule, rope_mode):
    model = _model(preset, rope_mode=rope_mode)
    proc = GenerationProcess(
        build_order(order_name, 4, schedule, seed=1), SamplingConfig(temperature=1.5, seed=3)
    )
    labels = torch.tensor([0, 5, 9])
    out = proc.sample(model, labels, return_logits=True)
    seq = proc.order.to_sequence(out.tokens_BL)
    ref = model(seq, labels, proc.order)
    assert torch.allclose(out.logits_BLV, ref, atol=1e-5)


def test_cached_cfg_equals_combined_uncached_forwards():
    model = _model("debug")
    proc = GenerationProcess(build_order("spiral", 4), SamplingConfig(cfg_scale=1.7, top_k=8, seed=1))
    labels = torch.tensor([2, 7])
    out = proc.sample(model, labels, return_logits=True)
    seq = proc.order.to_sequence(out.tokens_BL)
    cond = model(seq, labels, proc.order)
    uncond = model(seq, torch.full_like(labels, model.config.num_classes), proc.order)
    assert torch.allclose(out.logits_BLV, cfg_combine(cond, uncond, 1.7), atol=1e-5)


@pytest.mark.parametrize("preset", ["debug", "debug_raster"])
def test_every_parameter_gets_a_gradient(preset):
    from argen.training.tasks import get_task

    model = get_task("gpt").build_model({"preset": preset})
    with torch.no_grad():
        model.output.weight.normal_(std=0.02)
    codes = torch.randint(0, 64, (4, 16))
    loss, _ = get_task("gpt").loss(model.train(), (codes, torch.tensor([0, 1, 2, 3])), {"label_dropout": 0.5})
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing in ([], ["cls_embedding.embedding_table.weight"])  # null row may be undrawn; others not


@pytest.mark.parametrize(
    ("preset", "opts"), [("debug", {"randomize": True, "min_steps": 2, "max_steps": 8}), ("debug_raster", {})]
)
def test_debug_model_loss_goes_down(preset, opts):
    from argen.training.tasks import get_task

    task = get_task("gpt")
    model = task.build_model({"preset": preset}).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 64, (8, 16), generator=g)
    labels = torch.randint(0, 10, (8,), generator=g)
    losses = []
    for _ in range(40):
        loss, metrics = task.loss(model, (codes, labels), dict(opts, label_dropout=0.0))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(metrics["loss"])
    assert losses[0] == pytest.approx(torch.log(torch.tensor(64.0)).item(), abs=1e-4)  # zero-init head
    assert sum(losses[-5:]) / 5 < losses[0] - 1.0


def test_save_load_roundtrip(tmp_path):
    model = _model("debug")
    path = save_model(model, tmp_path / "gpt")
    loaded = load_model(path)
    order = build_order("spiral", 4)
    tokens, labels = torch.randint(0, 64, (2, 16)), torch.tensor([1, 2])
    assert torch.equal(loaded(tokens, labels, order), model(tokens, labels, order))


def test_load_official_accepts_derivable_buffers_and_rejects_mismatch(tmp_path):
    model = _model("debug", rope_mode="sequence")
    state = {f"_orig_mod.{k}": v for k, v in model.state_dict().items()}
    state["freqs_cis"] = torch.zeros(34, 16, 2)
    torch.save({"model": state, "steps": torch.tensor(3)}, tmp_path / "ear.pt")
    loaded = load_official_gpt(str(tmp_path / "ear.pt"), model.config)
    order = build_order("spiral", 4)
    tokens, labels = torch.randint(0, 64, (2, 16)), torch.tensor([1, 2])
    assert torch.equal(loaded(tokens, labels, order), model(tokens, labels, order))
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_official_gpt(str(tmp_path / "ear.pt"), gpt_config("debug", vocab_size=32))


@pytest.mark.parametrize("preset", ["debug", "debug_raster"])
def test_prefix_in_one_pass_equals_uncached_forward(preset):
    model = _model(preset, rope_mode="grid")
    proc = GenerationProcess(build_order("spiral", 4, "sides"), SamplingConfig(temperature=1.3, seed=2))
    labels = torch.tensor([4, 5])
    prefix = torch.randint(0, 64, (2, 4))  # the first 2x2 square, fed in the first pass
    out = proc.sample(model, labels, prefix_BP=prefix, return_logits=True)
    seq = proc.order.to_sequence(out.tokens_BL)
    assert torch.equal(seq[:, :4], prefix)
    ref = model(seq, labels, proc.order)
    assert torch.allclose(out.logits_BLV[:, 4:], ref[:, 4:], atol=1e-5)
