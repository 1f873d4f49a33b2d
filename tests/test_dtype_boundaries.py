"""Every module that holds weights casts the floats that come in at its own boundary, so any mix of dtypes
works: a bf16 generator with an fp32 tokenizer and the other way round, images in any float dtype.

Tolerance: a bf16 module's output against the same module in fp32 within 0.05 of the [-1, 1] pixel range
(bf16 keeps 8 mantissa bits; the decoders here are a few conv layers deep), and codes computed by a bf16
encoder agree with fp32 ones at >= 90% of positions (a rounded latent can cross to a neighbouring code).
"""

from __future__ import annotations

import copy
import itertools

import pytest
import torch

from argen.models.classifier import build_classifier
from argen.models.gpt import GPT, gpt_config
from argen.models.var import VAR, var_config
from argen.sampling.ar import GenerationProcess
from argen.sampling.families import GPTFamily
from argen.sampling.logits import sample_keys
from argen.sampling.next_scale import NextScaleConfig, sample_next_scale
from argen.tokenizers.multiscale import MultiScaleVQVAE, msvq_config
from argen.tokenizers.vqgan import VQModel, vq_config

DTYPES = (torch.float32, torch.bfloat16)
PAIRS = list(itertools.product(DTYPES, DTYPES))  # (weights, inputs)


def _tiny(module: torch.nn.Module) -> torch.nn.Module:
    module.init_weights()
    return module.eval()


@pytest.fixture(scope="module")
def vq() -> VQModel:
    torch.manual_seed(0)
    return _tiny(VQModel(vq_config("debug", in_channels=1, out_channels=1, codebook_size=64)))


@pytest.fixture(scope="module")
def msvq() -> MultiScaleVQVAE:
    torch.manual_seed(0)
    return _tiny(MultiScaleVQVAE(msvq_config("debug", in_channels=1, vocab_size=64)))


def _images(n: int = 2, side: int = 32) -> torch.Tensor:
    return torch.rand(n, 1, side, side, generator=torch.Generator().manual_seed(1)) * 2 - 1


@pytest.mark.parametrize(("weights", "inputs"), PAIRS)
@torch.no_grad()
def test_vq_encodes_and_decodes_any_float_dtype(
    vq: VQModel, weights: torch.dtype, inputs: torch.dtype
) -> None:
    tok = copy.deepcopy(vq).to(weights)
    img = _images()
    codes = tok.encode(img.to(inputs))
    ref_codes = vq.encode(img)
    assert codes.dtype == torch.int64 and float((codes == ref_codes).float().mean()) >= 0.9
    latent = vq.quantize.embed(ref_codes).to(inputs)
    out = tok.decode_latent(latent)
    assert out.dtype == weights
    assert float((out.float() - vq.decode_latent(latent.float())).abs().max()) < 0.05


@pytest.mark.parametrize(("weights", "inputs"), PAIRS)
@torch.no_grad()
def test_msvq_encodes_and_decodes_any_float_dtype(
    msvq: MultiScaleVQVAE, weights: torch.dtype, inputs: torch.dtype
) -> None:
    tok = copy.deepcopy(msvq).to(weights)
    side = msvq.config.image_size
    img = _images(side=side)
    idx = tok.img_to_idxBl(img.to(inputs))
    ref = msvq.img_to_idxBl(img)
    agree = torch.cat([(a == b).flatten() for a, b in zip(idx, ref, strict=True)]).float().mean()
    assert float(agree) >= 0.9
    f_hat = msvq.quantize.idxBl_to_fhat(ref).to(inputs)
    out = tok.fhat_to_img(f_hat)
    assert out.dtype == weights
    assert float((out.float() - msvq.fhat_to_img(f_hat.float())).abs().max()) < 0.05


@pytest.mark.parametrize(("weights", "inputs"), PAIRS)
@torch.no_grad()
def test_classifier_takes_any_float_dtype(weights: torch.dtype, inputs: torch.dtype) -> None:
    torch.manual_seed(0)
    clf = build_classifier({"preset": "debug"}).eval()
    ref = clf(_images())
    out = copy.deepcopy(clf).to(weights)(_images().to(inputs))
    assert torch.isfinite(out).all() and float((out.float() - ref).abs().max()) < 0.05 * float(
        ref.abs().max()
    )


@pytest.mark.parametrize(("model_dtype", "tok_dtype"), PAIRS)
@torch.no_grad()
def test_var_samples_with_a_tokenizer_of_another_dtype(
    msvq: MultiScaleVQVAE, model_dtype: torch.dtype, tok_dtype: torch.dtype
) -> None:
    torch.manual_seed(0)
    var = _tiny(VAR(var_config("debug"))).to(model_dtype)
    labels = torch.tensor([0, 3])
    out = sample_next_scale(
        var, copy.deepcopy(msvq).to(tok_dtype), labels, NextScaleConfig(), sample_keys(0, torch.arange(2))
    )
    assert out.images.shape[0] == 2 and torch.isfinite(out.images.float()).all()
    logits = var(labels, msvq.idxBl_to_var_input(out.tokens).to(tok_dtype))  # fp32/bf16 input either way
    assert logits.dtype == torch.float32


@pytest.mark.parametrize(("model_dtype", "tok_dtype"), PAIRS)
@torch.no_grad()
def test_gpt_samples_and_decodes_with_a_tokenizer_of_another_dtype(
    vq: VQModel, model_dtype: torch.dtype, tok_dtype: torch.dtype
) -> None:
    torch.manual_seed(0)
    gpt = _tiny(GPT(gpt_config("debug", grid=16, vocab_size=64))).to(model_dtype)
    proc = GenerationProcess.for_model(gpt, GPTFamily.default_sampling, None, None)
    labels = torch.tensor([0, 3])
    tokens = proc.sample(gpt, labels, keys_B=sample_keys(0, torch.arange(2))).tokens_BL
    img = copy.deepcopy(vq).to(tok_dtype).decode_codes(tokens.view(2, 16, 16))
    assert img.shape == (2, 1, 32, 32) and img.dtype == tok_dtype and torch.isfinite(img.float()).all()
