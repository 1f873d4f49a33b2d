"""Raster LlamaGen GPT against the official fixture: teacher-forcing logits and greedy CFG generation."""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from argen.models.checkpoints import load_strict
from argen.models.gpt import GPT, GPTConfig
from argen.orders import build_order
from argen.sampling.ar import GenerationProcess
from argen.sampling.logits import SamplingConfig


def _official_gpt(fixtures_dir):
    data = load_file(str(fixtures_dir / "llamagen_gpt_ref_a.safetensors"))
    cfg = GPTConfig(vocab_size=64, num_classes=10, dim=128, n_layer=2, n_head=4, grid=4, rope_mode="sequence")
    model = GPT(cfg)
    load_strict(model, {k[4:]: v for k, v in data.items() if k.startswith("gpt.")}, "llamagen_gpt_ref_a")
    return model.eval(), data


def test_official_teacher_forcing_logits(fixtures_dir):
    model, data = _official_gpt(fixtures_dir)
    with torch.no_grad():
        logits = model(data["in.idx"], data["in.labels"], build_order("raster", 4))
    torch.testing.assert_close(logits, data["out.logits"], atol=1e-4, rtol=0)


def test_official_greedy_cfg_generation(fixtures_dir):
    model, data = _official_gpt(fixtures_dir)
    proc = GenerationProcess.for_model(model, SamplingConfig(cfg_scale=2.0, top_k=1))
    out = proc.sample(model, data["in.labels"])
    assert torch.equal(out.tokens_BL, data["out.greedy_tokens"].long())


def test_grid_and_sequence_rope_coincide_for_raster(fixtures_dir):
    model, data = _official_gpt(fixtures_dir)
    model.config.rope_mode = "grid"
    with torch.no_grad():
        logits = model(data["in.idx"], data["in.labels"], build_order("raster", 4))
    torch.testing.assert_close(logits, data["out.logits"], atol=1e-4, rtol=0)
