"""EAR: official fixture, sequential equivalence, extension/inpainting, snapshots, FLOPs."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from argen.models.checkpoints import load_strict
from argen.models.flops import gpt_sampling_flops, measured_flops
from argen.models.gpt import GPT, GPTConfig, gpt_config
from argen.orders import build_order
from argen.sampling.ar import GenerationProcess, centre_prefix, extend_from_centre
from argen.sampling.logits import SamplingConfig, cfg_combine, sample_keys


def _official_ear(fixtures_dir):
    data = load_file(str(fixtures_dir / "ear_ref_a.safetensors"))
    cfg = GPTConfig(
        vocab_size=64,
        num_classes=10,
        dim=64,
        n_layer=2,
        n_head=2,
        mode="next_any",
        adaln=True,
        rope_mode="sequence",
        grid=16,
        order="spiral",
        schedule="sides",
    )
    model = GPT(cfg)
    load_strict(model, {k[4:]: v for k, v in data.items() if k.startswith("gpt.")}, "ear_ref_a")
    return model.eval(), data


def _model(preset: str = "debug", **kw) -> GPT:
    torch.manual_seed(0)
    model = GPT(gpt_config(preset, **kw))
    model.init_weights()
    with torch.no_grad():
        model.output.weight.normal_(std=0.5)
    return model.eval()


def test_official_two_stream_logits_and_loss(fixtures_dir):
    model, data = _official_ear(fixtures_dir)
    order = build_order("spiral", 16)
    target = order.to_sequence(data["in.idx_raster"])
    with torch.no_grad():
        logits = model(target, data["in.labels"], order)
    torch.testing.assert_close(logits, data["out.logits_spiral"], atol=1e-4, rtol=0)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten())
    torch.testing.assert_close(loss, data["out.loss"][0], atol=1e-5, rtol=0)


def test_official_31_step_greedy_cfg_generation(fixtures_dir):
    model, data = _official_ear(fixtures_dir)
    proc = GenerationProcess.for_model(model, SamplingConfig(cfg_scale=1.65, top_k=1))
    assert proc.order.num_steps == 31
    out = proc.sample(model, data["in.labels"])
    assert torch.equal(out.tokens_BL, data["out.greedy_tokens_raster"])


def _naive_greedy(model: GPT, order, labels, cfg_scale):
    """Uncached reference: one full teacher-forcing forward per step (unknown tokens are invisible)."""
    seq = torch.zeros(len(labels), order.length, dtype=torch.long)
    null = torch.full_like(labels, model.config.num_classes)
    bounds = order.bounds
    steps = range(order.num_steps) if model.config.mode == "next_any" else range(order.length)
    for s in steps:
        lo, hi = (bounds[s], bounds[s + 1]) if model.config.mode == "next_any" else (s, s + 1)
        logits = cfg_combine(model(seq, labels, order), model(seq, null, order), cfg_scale)
        seq[:, lo:hi] = logits[:, lo:hi].argmax(-1)
    return order.to_raster(seq)


@pytest.mark.parametrize(
    ("preset", "schedule"),
    [("debug", "tokens:1"), ("debug", "sides"), ("debug", [3, 6, 7]), ("debug_raster", None)],
)
def test_cached_sampler_equals_sequential_uncached(preset, schedule):
    model = _model(preset)
    order_name = "spiral" if preset == "debug" else "raster"
    proc = GenerationProcess(build_order(order_name, 4, schedule), SamplingConfig(cfg_scale=2.0, top_k=1))
    labels = torch.tensor([1, 4, 8])
    with torch.no_grad():
        ref = _naive_greedy(model, proc.order, labels, 2.0)
    assert torch.equal(proc.sample(model, labels).tokens_BL, ref)


def test_one_token_per_step_ear_equals_sequential_spiral():
    """EAR with one token per step: each [MASK] sees exactly the tokens before it, like a next-token model."""
    model = _model()
    proc = GenerationProcess(build_order("spiral", 4, "tokens:1"), SamplingConfig(top_k=1))
    labels = torch.tensor([3, 6])
    out = proc.sample(model, labels, return_logits=True)
    seq = proc.order.to_sequence(out.tokens_BL)
    for j in range(16):  # position j's logits depend on tokens < j only
        changed = seq.clone()
        changed[:, j:] = 0
        assert torch.allclose(model(changed, labels, proc.order)[:, j], out.logits_BLV[:, j], atol=1e-5)


def test_sampling_is_seeded_and_snapshots_grow():
    model = _model()
    proc = GenerationProcess(
        build_order("spiral", 4, "sides"), SamplingConfig(temperature=1.0, top_p=0.9, seed=5)
    )
    labels = torch.tensor([0, 1])
    a, b = proc.sample(model, labels, snapshots=True), proc.sample(model, labels)
    assert torch.equal(a.tokens_BL, b.tokens_BL)
    filled = [int((s >= 0).sum()) for s in a.snapshots]
    assert filled == [2 * c for c in proc.order.bounds[1:]]  # one new group per pass, batch of 2
    assert torch.equal(a.snapshots[-1], a.tokens_BL)


@pytest.mark.parametrize("canvas", [4, 6])
def test_extension_keeps_the_centre_and_fills_the_rest(canvas):
    model = _model(rope_mode="grid")
    centre = torch.randint(0, 64, (2, 2, 2))
    proc = GenerationProcess(build_order("spiral", canvas, "sides"), SamplingConfig(top_k=4, seed=1))
    out = extend_from_centre(model, torch.tensor([1, 2]), centre, proc)
    c = (canvas - 1) // 2
    assert torch.equal(out.tokens_BL.view(2, canvas, canvas)[:, c : c + 2, c : c + 2], centre)
    assert int(out.tokens_BL.min()) >= 0
    # the known centre is fed in one pass: the remaining passes are the later groups only
    assert len(proc.steps(model, 4)) == proc.order.num_steps - 3


def test_extension_needs_grid_rope_and_a_square_boundary():
    model = _model(rope_mode="sequence")
    centre = torch.zeros(1, 2, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="rope_mode='grid'"):
        extend_from_centre(model, torch.tensor([0]), centre, GenerationProcess(build_order("spiral", 6)))
    with pytest.raises(ValueError, match="boundary"):
        centre_prefix(build_order("spiral", 4, [3, 13]), centre)


@pytest.mark.parametrize(("preset", "cfg_scale"), [("debug", 1.5), ("debug", 1.0), ("debug_raster", 2.0)])
def test_analytic_sampling_flops_match_flop_counter(preset, cfg_scale):
    model = _model(preset)
    proc = GenerationProcess.for_model(model, SamplingConfig(cfg_scale=cfg_scale))
    labels = torch.tensor([1, 2])
    measured = measured_flops(proc.sample, model, labels) / 2
    analytic = gpt_sampling_flops(model.config, proc.order, guided=cfg_scale != 1.0)
    assert analytic["flops"] == measured
    assert analytic["passes"] == (7 if preset == "debug" else 16)


def test_generate_sample_i_depends_only_on_seed_and_index_not_on_batching():
    from argen.sampling.ar import ARSampleConfig, generate

    model = _model()
    labels = torch.tensor([0, 1, 2, 3, 4])

    def run(batch_size, seed=7, indices=None):
        sampling = SamplingConfig(cfg_scale=1.5, seed=seed)
        cfg = ARSampleConfig(schedule=3, batch_size=batch_size, sampling=sampling)
        return generate(model, labels, cfg, snapshots=True, indices_N=indices)

    out = run(2)
    assert out.tokens_BL.shape == (5, 16) and len(out.snapshots) == 3  # 3 passes chosen at sampling time
    for batch_size in (1, 3, 5):
        assert torch.equal(run(batch_size).tokens_BL, out.tokens_BL)
    # sample i of a batch equals the same index sampled alone; another seed or index changes it
    alone = run(1, indices=torch.tensor([0, 1, 2, 3, 4]))
    assert torch.equal(alone.tokens_BL, out.tokens_BL)
    other_seed, shifted = run(2, seed=8), run(2, indices=torch.arange(5) + 5)
    assert not torch.equal(other_seed.tokens_BL, out.tokens_BL)
    assert not torch.equal(shifted.tokens_BL, out.tokens_BL)


def test_adaptive_threshold_zero_equals_the_fixed_schedule_of_its_windows():
    from argen.sampling.ar import AdaptiveConfig, sample_adaptive

    model = _model()
    adaptive = AdaptiveConfig(threshold=0.0, ratio=0.5)
    sizes, done = [], 0
    while done < 16:
        sizes.append(adaptive.window(done, 16))
        done += sizes[-1]
    sampling = SamplingConfig(cfg_scale=1.5, temperature=1.2, seed=4)
    labels = torch.tensor([3, 8])
    out = sample_adaptive(GenerationProcess(build_order("spiral", 4), sampling), model, labels, adaptive)
    ref = GenerationProcess(build_order("spiral", 4, sizes), sampling).sample(model, labels)
    assert out.passes == len(sizes) and torch.equal(out.tokens_BL, ref.tokens_BL)


def test_adaptive_high_threshold_spends_more_passes():
    from argen.sampling.ar import AdaptiveConfig, sample_adaptive

    model = _model()
    proc = GenerationProcess(build_order("spiral", 4), SamplingConfig(seed=2))
    labels = torch.tensor([1, 2])
    floor_only = AdaptiveConfig(threshold=1.01, min_tokens=2, min_keep=0.01, ratio=1.0)
    strict = sample_adaptive(proc, model, labels, floor_only, snapshots=True)
    loose = sample_adaptive(proc, model, labels, AdaptiveConfig(threshold=0.0))
    assert strict.passes == 8 and loose.passes < strict.passes
    # snapshots follow the first image: 2 more tokens per pass
    assert [int((s >= 0).sum()) for s in strict.snapshots] == [2 * (i + 1) for i in range(8)]
    # each image runs its own schedule: a batch equals its images sampled one by one
    keys = sample_keys(2, [0, 1])
    mid = AdaptiveConfig(threshold=0.05)
    both = sample_adaptive(proc, model, labels, mid, keys_B=keys)
    for i in range(2):
        one = sample_adaptive(proc, model, labels[i : i + 1], mid, keys_B=keys[i : i + 1])
        assert torch.equal(one.tokens_BL, both.tokens_BL[i : i + 1]) and one.passes == both.passes_each[i]
    assert int(strict.tokens_BL.min()) >= 0 and int(loose.tokens_BL.min()) >= 0
    with pytest.raises(ValueError, match="next_any"):
        sample_adaptive(proc, _model("debug_raster"), labels, AdaptiveConfig())


def test_growth_frames_grey_out_ungenerated_cells():
    from argen.sampling.ar import growth_frames

    model = _model()
    out = GenerationProcess.for_model(model, SamplingConfig(seed=1)).sample(
        model, torch.tensor([0]), snapshots=True
    )

    def decode(codes_BHW):  # stand-in tokenizer: each code becomes a 2x2 patch of value code / 63
        return codes_BHW.float().div(63).repeat_interleave(2, 1).repeat_interleave(2, 2)[:, None]

    frames = growth_frames(out.snapshots, decode, 4)
    assert len(frames) == 7 and frames[0].shape == (1, 1, 8, 8)
    first = frames[0][0, 0, ::2, ::2]  # one pixel per cell
    known = out.snapshots[0].view(4, 4) >= 0
    assert int(known.sum()) == 1 and torch.all(first[~known] == 0.5)
    assert torch.allclose(frames[-1], decode(out.tokens_BL.view(1, 4, 4)))
