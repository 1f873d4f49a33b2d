"""The CUDA paths (run on a machine with a GPU: `pytest -m cuda`, or `python -m benchmarks gpu`, which runs
them first). Every check compares the GPU against the CPU path it mirrors or a plain path it replaces:

* fp32 teacher-forcing logits of every family on CUDA match the CPU's (relative error < 1e-3: TF32 is off
  for matmuls by default; the tokenizers' convolutions may use TF32, so decoded pixels get 2e-2);
* bf16 on CUDA stays within the CPU bf16 tests' tolerances of fp32 (2% dense, 5% ActVAR);
* cached sampling equals the uncached sequential forward (EAR, greedy) and the VAR fast sampler equals its
  reference sampler on the GPU;
* `argen sample --device cuda` writes valid images and records the dtype (`auto` = bf16 on sm_80+);
* a few training steps on the GPU in bf16 autocast lower the loss on a fixed batch.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from argen.cli import main
from argen.models.checkpoints import load_model
from argen.sampling.ar import GenerationProcess
from argen.sampling.families import GPTFamily
from argen.sampling.logits import sample_keys
from argen.sampling.next_scale import NextScaleConfig, sample_next_scale

# ARGEN_TEST_CUDA_DEVICE=cpu runs these checks' logic on a machine without a GPU (CPU against CPU)
CUDA = torch.device(os.environ.get("ARGEN_TEST_CUDA_DEVICE", "cuda"))
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(CUDA.type == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
LABELS = torch.tensor([0, 7])


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float().cpu(), b.float().cpu()
    return float((a - b).norm() / (b - b.mean()).norm())


@pytest.mark.parametrize("name", ["ear_fmnist", "raster_fmnist"])
@torch.no_grad()
def test_gpt_logits_on_cuda_match_cpu(name: str) -> None:
    model, tok = load_model(name).eval(), load_model("vq2_fmnist").eval()
    keys = sample_keys(0, torch.arange(2), torch.device("cpu"))
    proc = GenerationProcess.for_model(model, GPTFamily.default_sampling, None, None)
    tokens_BL = proc.sample(model, LABELS, keys_B=keys).tokens_BL
    seq_BL = proc.order.to_sequence(tokens_BL)
    cpu = model(seq_BL, LABELS, proc.order)
    gpu_model = copy.deepcopy(model).to(CUDA)
    gpu = gpu_model(seq_BL.to(CUDA), LABELS.to(CUDA), proc.order)
    assert _rel_err(gpu, cpu) < 1e-3
    gpu16 = copy.deepcopy(gpu_model).to(torch.bfloat16)(seq_BL.to(CUDA), LABELS.to(CUDA), proc.order)
    assert _rel_err(gpu16, cpu) < 0.02
    codes = tokens_BL.view(-1, model.config.grid, model.config.grid)
    img_cpu = tok.decode_codes(codes)
    img_gpu = copy.deepcopy(tok).to(CUDA).decode_codes(codes.to(CUDA))
    assert float((img_gpu.float().cpu() - img_cpu).abs().max()) < 2e-2


@pytest.mark.parametrize(("name", "tol16"), [("var_fmnist", 0.02), ("actvar_fmnist", 0.05)])
@torch.no_grad()
def test_next_scale_logits_on_cuda_match_cpu(name: str, tol16: float) -> None:
    model, tok = load_model(name).eval(), load_model("msvq2_fmnist").eval()
    view = model.sampling_view() if model.kind == "actvar" else model
    keys = sample_keys(0, torch.arange(2), torch.device("cpu"))
    tokens = sample_next_scale(view, tok, LABELS, NextScaleConfig(), keys).tokens
    var_input = tok.idxBl_to_var_input(tokens)
    cpu = model(LABELS, var_input)
    gpu_model = copy.deepcopy(model).to(CUDA)
    assert _rel_err(gpu_model(LABELS.to(CUDA), var_input.to(CUDA)), cpu) < 1e-3
    gpu16 = copy.deepcopy(gpu_model).to(torch.bfloat16)(LABELS.to(CUDA), var_input.to(CUDA))
    assert _rel_err(gpu16, cpu) < tol16


def test_var_fast_sampler_equals_reference_on_cuda(files: dict, tmp_path: Path, capsys) -> None:
    arrays = []
    for sampler in ("fast", "reference"):
        out = tmp_path / sampler
        main(
            [
                "sample",
                "--model",
                str(files["var"]),
                "--tokenizer",
                str(files["msvq"]),
                "--device",
                str(CUDA),
                "--dtype",
                "fp32",
                "--classes",
                "2,7",
                "--n-per-class",
                "2",
                "--sampler",
                sampler,
                "--npz",
                "--out",
                str(out),
            ]
        )
        report = capsys.readouterr().out
        npz = json.loads(report[report.index("{") :])["npz"]
        with np.load(npz) as f:
            arrays.append(f["arr_0"])
    assert np.array_equal(arrays[0], arrays[1])


@torch.no_grad()
def test_ear_cached_sampling_equals_uncached_on_cuda() -> None:
    """Greedy EAR with the KV cache on the GPU = one full uncached forward per pass (tests/test_ear.py's
    reference, here on the GPU)."""
    from argen.orders import build_order
    from argen.sampling.logits import SamplingConfig, cfg_combine
    from tests.test_ear import _model

    model = _model("debug").to(CUDA)
    order = build_order("spiral", 4, "sides")
    proc = GenerationProcess(order, SamplingConfig(cfg_scale=2.0, top_k=1))
    labels = torch.tensor([1, 4, 8], device=CUDA)
    seq = torch.zeros(len(labels), order.length, dtype=torch.long, device=CUDA)
    null = torch.full_like(labels, model.config.num_classes)
    for s in range(order.num_steps):
        lo, hi = order.bounds[s], order.bounds[s + 1]
        logits = cfg_combine(model(seq, labels, order), model(seq, null, order), 2.0)
        seq[:, lo:hi] = logits[:, lo:hi].argmax(-1)
    assert torch.equal(proc.sample(model, labels).tokens_BL, order.to_raster(seq))


@pytest.mark.parametrize("dtype", ["auto", "fp32"])
def test_sample_command_on_cuda(dtype: str, tmp_path: Path, capsys) -> None:
    from argen.device import dtype_name, resolve_dtype

    main(
        [
            "sample",
            "--model",
            "ear_fmnist",
            "--device",
            str(CUDA),
            "--dtype",
            dtype,
            "--classes",
            "0,3",
            "--n-per-class",
            "2",
            "--out",
            str(tmp_path),
        ]
    )
    ran = json.loads((tmp_path / "sample.json").read_text())["run"]["dtype"]
    if CUDA.type == "cuda":
        major = torch.cuda.get_device_capability()[0]
        assert ran == ("bf16" if dtype == "auto" and major >= 8 else "fp32")
    assert ran == dtype_name(resolve_dtype(dtype, CUDA))
    grid = np.asarray(Image.open(tmp_path / "samples.png"), dtype=np.float32)
    assert grid.size and grid.std() > 5  # an image grid, not a blank page


def test_training_steps_on_cuda_lower_the_loss() -> None:
    from argen.models.gpt import GPT, gpt_config
    from argen.orders import build_order

    torch.manual_seed(0)
    model = GPT(gpt_config("debug", grid=16)).to(CUDA)
    order = build_order("spiral", 16, "sides")
    labels = torch.arange(8, device=CUDA) % model.config.num_classes
    # a learnable batch: each token a function of its class and position
    seq = (labels[:, None] * 5 + torch.arange(order.length, device=CUDA)) % model.config.vocab_size
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        with torch.autocast(CUDA.type, dtype=torch.bfloat16):
            logits = model(seq, labels, order)
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), seq.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert np.isfinite(losses).all() and losses[-1] < 0.7 * losses[0]
