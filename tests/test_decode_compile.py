"""The compiled cached pass: masks as wide as the cache give every pass one key shape, so one graph serves
a whole raster call (it made one graph per pass before, hitting the recompile limit), and compiled sampling
draws the same tokens as eager. Captured with the "eager" backend (graph capture without a compiler)."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

from argen.models.gpt import GPT, gpt_config
from argen.sampling.ar import GenerationProcess
from argen.sampling.logits import SamplingConfig


@pytest.mark.parametrize(("preset", "max_graphs"), [("debug_raster", 1), ("debug", 3)])
def test_compiled_decode_shares_graphs_and_matches_eager(preset: str, max_graphs: int) -> None:
    torch._dynamo.reset()
    counters.clear()
    model = GPT(gpt_config(preset))
    model.init_weights()
    model.eval()
    labels = torch.tensor([1, 2, 3])
    sampling = SamplingConfig(cfg_scale=2.0)
    process = GenerationProcess.for_model(model, sampling)
    eager = process.sample(model, labels, return_logits=True)
    compiled = GenerationProcess(process.order, sampling, compile=True, compile_backend="eager")
    out = compiled.sample(model, labels, return_logits=True)
    assert torch.equal(out.tokens_BL, eager.tokens_BL)
    torch.testing.assert_close(out.logits_BLV, eager.logits_BLV, rtol=1e-5, atol=1e-5)
    assert out.passes == eager.passes > max_graphs
    assert 1 <= counters["stats"]["unique_graphs"] <= max_graphs
    compiled.sample(model, labels)  # a second call reuses the graphs
    assert counters["stats"]["unique_graphs"] <= max_graphs
