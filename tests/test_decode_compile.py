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


def test_compile_flag_reaches_the_cached_pass(files: dict, tmp_path, capsys, monkeypatch) -> None:
    """`--compile` / GenerateConfig(compile=True) sends every raster/EAR pass through the compiled step (the
    eager backend here: capture without compiling) and samples the same images; VAR refuses it."""
    import json

    import argen.sampling.ar as ar
    from argen.cli import main
    from argen.sampling.pipeline import GenerateConfig, Pipeline

    calls = []

    def eager_capture(model, backend, mode=None):
        calls.append((backend, mode))
        return torch.compile(model.decode_step, backend="eager")

    monkeypatch.setattr(ar, "_compiled_step", eager_capture)
    cfg = GenerateConfig(str(files["ear"]), str(files["vq"]), batch_size=4, device="cpu", dtype="fp32")
    plain = Pipeline.load(cfg).sample(torch.tensor([1, 2, 3]))
    compiled = Pipeline.load(GenerateConfig(**{**cfg.__dict__, "compile": True})).sample(
        torch.tensor([1, 2, 3])
    )
    assert calls and calls[0] == ("inductor", None)  # CPU: the default mode (CUDA graphs only on a GPU)
    assert torch.equal(compiled.images, plain.images)
    args = ["sample", "--model", str(files["ear"]), "--tokenizer", str(files["vq"]), "--device", "cpu"]
    main([*args, "--compile", "--classes", "1", "--n-per-class", "2", "--out", str(tmp_path / "s")])
    assert json.loads((tmp_path / "s" / "sample.json").read_text())["n"] == 2 and len(calls) > 1
    capsys.readouterr()
    with pytest.raises(ValueError, match="--compile applies to raster/EAR models"):
        Pipeline.load(GenerateConfig(str(files["var"]), str(files["msvq"]), device="cpu", compile=True))
