"""bf16 as a model dtype: every family's teacher-forcing logits and both tokenizers' decoding stay close to
fp32, sampling runs end to end in bf16, and `auto` picks bf16 only where the device's bf16 matmuls are fast.

Tolerances: logits relative error ||l16 - l32|| / ||l32 - mean(l32)|| below 2% for the dense families
(bf16 keeps 8 mantissa bits: ~0.4% per rounding, accumulated over the blocks) and below 5% for ActVAR, whose
token gates and expert routers make discrete top-k choices that flip near ties when the hidden state is
rounded; the argmax token agrees at >= 96% of positions; decoded pixels within 0.05 (of a [-1, 1] range).
"""

from __future__ import annotations

import copy

import pytest
import torch

import argen.device as device_mod
from argen.device import bf16_units, dtype_name, measure_peak, resolve_dtype
from argen.models.checkpoints import load_model
from argen.sampling.ar import GenerationProcess
from argen.sampling.families import GPTFamily
from argen.sampling.logits import sample_keys
from argen.sampling.next_scale import NextScaleConfig, sample_next_scale
from argen.sampling.pipeline import GenerateConfig, Pipeline

LABELS = torch.tensor([0, 7])
KEYS = sample_keys(0, torch.arange(2), torch.device("cpu"))


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    return float((a - b).norm() / (b - b.mean()).norm())


def _argmax_agree(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.argmax(-1) == b.argmax(-1)).float().mean())


@pytest.mark.parametrize(
    ("name", "tokenizer"), [("ear_fmnist", "vq2_fmnist"), ("raster_fmnist", "vq2_fmnist")]
)
@torch.no_grad()
def test_gpt_logits_and_vq_decode_bf16_close_to_fp32(name: str, tokenizer: str) -> None:
    model, tok = load_model(name).eval(), load_model(tokenizer).eval()
    proc = GenerationProcess.for_model(model, GPTFamily.default_sampling, None, None)
    tokens_BL = proc.sample(model, LABELS, keys_B=KEYS).tokens_BL  # in-distribution tokens
    seq_BL = proc.order.to_sequence(tokens_BL)
    logits32 = model(seq_BL, LABELS, proc.order)
    logits16 = copy.deepcopy(model).to(torch.bfloat16)(seq_BL, LABELS, proc.order)
    assert logits16.dtype == torch.float32  # the head's output is promoted for softmax/sampling
    assert _rel_err(logits16, logits32) < 0.02 and _argmax_agree(logits16, logits32) > 0.96
    codes = tokens_BL.view(-1, model.config.grid, model.config.grid)
    img32 = tok.decode_codes(codes)
    img16 = copy.deepcopy(tok).to(torch.bfloat16).decode_codes(codes)
    assert img16.dtype == torch.bfloat16 and float((img16.float() - img32).abs().max()) < 0.05


@pytest.mark.parametrize(("name", "tol"), [("var_fmnist", 0.02), ("actvar_fmnist", 0.05)])
@torch.no_grad()
def test_next_scale_logits_and_msvq_decode_bf16_close_to_fp32(name: str, tol: float) -> None:
    model, tok = load_model(name).eval(), load_model("msvq2_fmnist").eval()
    view = model.sampling_view() if model.kind == "actvar" else model
    tokens = sample_next_scale(view, tok, LABELS, NextScaleConfig(), KEYS).tokens
    var_input = tok.idxBl_to_var_input(tokens)
    logits32 = model(LABELS, var_input)
    logits16 = copy.deepcopy(model).to(torch.bfloat16)(LABELS, var_input)  # ActVAR: was a dtype error
    assert _rel_err(logits16, logits32) < tol and _argmax_agree(logits16, logits32) > 0.96
    img32 = tok.idxBl_to_img(tokens)
    img16 = copy.deepcopy(tok).to(torch.bfloat16).idxBl_to_img(tokens)
    assert float((img16.float() - img32).abs().max()) < 0.05


@pytest.mark.parametrize(
    ("model", "tokenizer"),
    [
        ("ear_fmnist", "vq2_fmnist"),
        ("raster_fmnist", "vq2_fmnist"),
        ("var_fmnist", "msvq2_fmnist"),
        ("actvar_fmnist", "msvq2_fmnist"),
    ],
)
def test_sampling_runs_in_bf16(model: str, tokenizer: str) -> None:
    """Same seeds, both dtypes: bf16 samples are valid images of the same classes. Sampled tokens are
    discrete, so one flipped draw changes the rest of an image: the images are close, not equal."""
    out = {}
    for dtype in ("fp32", "bf16"):
        pipe = Pipeline.load(GenerateConfig(model, tokenizer, batch_size=2, device="cpu", dtype=dtype))
        assert next(pipe.model.parameters()).dtype == resolve_dtype(dtype)
        assert next(pipe.tokenizer.parameters()).dtype == resolve_dtype(dtype)
        out[dtype] = pipe.sample(LABELS).images
    img16, img32 = out["bf16"], out["fp32"]
    assert img16.dtype == torch.float32 and img16.shape == img32.shape == (2, 1, 32, 32)
    assert torch.isfinite(img16).all() and img16.min() >= 0 and img16.max() <= 1
    assert float((img16 - img32).abs().mean()) < 0.2


def test_peak_measures_both_dtypes_and_reports_the_hardware() -> None:
    res = measure_peak("cpu", shapes=[(64, 64, 64)], repeats=2)
    assert res["threads"] == torch.get_num_threads() == 1
    for name in ("fp32", "bf16"):
        assert res["dtypes"][name]["peak_flops_per_s"] > 1e6
    assert res["bf16_over_fp32"] == pytest.approx(
        res["dtypes"]["bf16"]["peak_flops_per_s"] / res["dtypes"]["fp32"]["peak_flops_per_s"]
    )
    assert res["auto_dtype"] == dtype_name(resolve_dtype("auto", "cpu"))
    assert res["cpu_model"] and "load_avg_1min" in res and res["bf16_units"] == bf16_units("cpu")
    assert resolve_dtype("bf16") == torch.bfloat16 and dtype_name(torch.float32) == "fp32"
    with pytest.raises(ValueError, match="auto, bf16 or fp32"):
        resolve_dtype("fp16")
    with pytest.raises(ValueError, match="auto, bf16 or fp32"):
        GenerateConfig(model="ear_fmnist", dtype="half")


# flags of the three CPU kinds seen under our machines (abridged /proc/cpuinfo)
CPU_KINDS = {
    "epyc_avx2": ("avx", "avx2", "fma"),
    "epyc_zen4": ("avx2", "avx512f", "avx512bw", "avx512_bf16"),
    "xeon_amx": ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"),
}


@pytest.mark.parametrize(
    ("kind", "expected"), [("epyc_avx2", "fp32"), ("epyc_zen4", "bf16"), ("xeon_amx", "bf16")]
)
def test_auto_dtype_follows_cpu_capability(monkeypatch: pytest.MonkeyPatch, kind: str, expected: str) -> None:
    """`auto` is decided from the CPU's flags alone: the same answer on every call, whatever the load."""
    monkeypatch.setattr(device_mod, "cpu_flags", lambda: frozenset(CPU_KINDS[kind]))
    assert {dtype_name(resolve_dtype("auto", "cpu")) for _ in range(3)} == {expected}
    assert bf16_units("cpu") == {"epyc_avx2": None, "epyc_zen4": "avx512_bf16", "xeon_amx": "amx_bf16"}[kind]
    from argen.config import TrainConfig
    from argen.training.loop import resolve_precision

    cfg = resolve_precision(TrainConfig(precision="auto"), torch.device("cpu"))
    assert cfg.precision == expected


@pytest.mark.parametrize(("capability", "expected"), [((7, 5), "fp32"), ((8, 0), "bf16"), ((9, 0), "bf16")])
def test_auto_dtype_follows_cuda_capability(
    monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int], expected: str
) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert dtype_name(resolve_dtype("auto", "cuda:0")) == expected
    assert bf16_units("cuda:0") == (None if expected == "fp32" else f"sm_{capability[0]}{capability[1]}")
