"""Tokenizers: presets, quantizer invariants, multi-scale consistency, gradients, training, GAN, I/O."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from argen.models.checkpoints import load_model, save_model
from argen.tokenizers import multiscale, vqgan
from argen.tokenizers.evaluate import reconstruction_metrics
from argen.tokenizers.losses import (
    DiscConfig,
    PatchDiscriminator,
    TokenizerLossConfig,
    TokenizerWithDisc,
    hinge_d_loss,
    tokenizer_objective,
)
from argen.tokenizers.multiscale import MultiScaleVQVAE, msvq_config
from argen.tokenizers.quantizer import usage_stats
from argen.tokenizers.vqgan import VQModel, vq_config
from argen.training.tasks import get_task

SMALL_VQ = ("debug", "fmnist")


SMALL_MSVQ = ("debug", "fmnist", "var_ref_a")


def _vq(preset: str = "debug") -> VQModel:
    model = VQModel(vq_config(preset))
    model.init_weights()
    return model


def _msvq(preset: str = "debug") -> MultiScaleVQVAE:
    model = MultiScaleVQVAE(msvq_config(preset))
    model.init_weights()
    return model


def _images(batch: int, channels: int, size: int) -> torch.Tensor:
    return torch.rand(batch, channels, size, size) * 2 - 1


def _smooth_images(batch: int, channels: int, size: int) -> torch.Tensor:
    """Learnable content (white noise is not): bilinear upsampling of random 4x4 images."""
    return F.interpolate(_images(batch, channels, 4), size=(size, size), mode="bilinear")


# ------------------------------------------------------------------------------------------------ presets
@pytest.mark.parametrize("preset", sorted(vqgan.PRESETS))
def test_vq_presets_build(preset):
    cfg = vqgan.PRESETS[preset]
    with torch.device("meta"):
        model = VQModel(cfg)
    assert model.quantize.embedding.weight.shape == (cfg.codebook_size, cfg.codebook_dim)
    image = 32 if preset == "fmnist" else 16 * model.downsample
    assert model.grid_size(image) == image // 2 ** (len(cfg.ch_mult) - 1)
    if preset in SMALL_VQ:
        model = _vq(preset)
        img = _images(2, cfg.in_channels, image)
        idx = model.encode(img)
        assert idx.shape == (2, model.grid_size(image), model.grid_size(image)) and idx.dtype == torch.int64
        assert idx.max() < cfg.codebook_size
        out = model.decode_codes(idx)
        assert out.shape == img.shape and out.abs().max() <= 1


@pytest.mark.parametrize("preset", sorted(multiscale.PRESETS))
def test_msvq_presets_build(preset):
    cfg = multiscale.PRESETS[preset]
    with torch.device("meta"):
        model = MultiScaleVQVAE(cfg)
    assert model.quantize.embedding.weight.shape == (cfg.vocab_size, cfg.z_channels)
    assert model.grid_size(cfg.image_size) == cfg.patch_nums[-1]
    if preset in SMALL_MSVQ:
        model = _msvq(preset)
        img = _images(2, cfg.in_channels, cfg.image_size)
        idx_Bl = model.img_to_idxBl(img)
        assert [t.shape for t in idx_Bl] == [(2, pn * pn) for pn in cfg.patch_nums]
        var_input = model.idxBl_to_var_input(idx_Bl)
        assert var_input.shape == (2, cfg.seq_len - cfg.patch_nums[0] ** 2, cfg.z_channels)
        assert model.idxBl_to_img(idx_Bl).shape == img.shape


def test_fmnist_presets_give_16x16_grid():
    assert vqgan.VQModel(vq_config("fmnist")).grid_size(32) == 16
    cfg = msvq_config("fmnist")
    assert cfg.image_size == 32 and cfg.in_channels == 1
    assert cfg.patch_nums == (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)


def test_config_validation():
    with pytest.raises(ValueError, match="norm_groups"):
        vq_config("debug", ch=12)
    with pytest.raises(ValueError, match="unknown VQ preset"):
        vq_config("nope")
    with pytest.raises(ValueError, match="unknown config key"):
        msvq_config("debug", widht=3)
    with pytest.raises(ValueError, match="increasing"):
        msvq_config("debug", patch_nums=[1, 3, 2, 4])
    with pytest.raises(ValueError, match="latent grid"):
        _msvq().img_to_idxBl(_images(1, 3, 16))


# -------------------------------------------------------------------------------------------- quantizers
def test_usage_stats_uniform_and_single():
    usage, ppl = usage_stats(torch.arange(8).repeat(3), 16)
    assert usage.item() == pytest.approx(0.5) and ppl.item() == pytest.approx(8.0, rel=1e-5)
    usage, ppl = usage_stats(torch.full((10,), 3), 16)
    assert usage.item() == pytest.approx(1 / 16) and ppl.item() == pytest.approx(1.0)


@pytest.mark.parametrize("l2_norm", [True, False])
def test_vq_nearest_code_and_straight_through(l2_norm):
    model = VQModel(vq_config("debug", codebook_l2_norm=l2_norm))
    model.init_weights()
    model.eval()
    img = _images(3, 3, 16)
    z = model.encode_latent(img)
    z_NC = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    e_VC = model.quantize.embedding.weight
    if l2_norm:
        z_NC, e_VC = F.normalize(z_NC, dim=-1), F.normalize(e_VC, dim=-1)
    expected = torch.cdist(z_NC, e_VC).argmin(1).view(3, 8, 8)
    idx = model.encode(img)
    assert torch.equal(idx, expected)
    rec, aux = model(img)  # straight-through value = decode of the codes
    torch.testing.assert_close(rec.clamp(-1, 1), model.decode_codes(idx), atol=2e-5, rtol=0)
    assert torch.equal(aux["idx"], idx)


def test_msvq_training_quantization_matches_inference():
    model = _msvq()
    img = _images(3, 3, 8)
    model.train()
    rec, aux = model(img)
    model.eval()
    idx_Bl = model.img_to_idxBl(img)
    assert all(torch.equal(a, b) for a, b in zip(aux["idx_Bl"], idx_Bl, strict=True))
    torch.testing.assert_close(rec.clamp(-1, 1), model.idxBl_to_img(idx_Bl), atol=1e-5, rtol=0)


@torch.no_grad()
def test_msvq_autoregressive_steps_match_teacher_forcing():
    model = _msvq("var_ref_a").eval()
    pns = model.config.patch_nums
    idx_Bl = model.img_to_idxBl(_images(2, 3, model.config.image_size))
    var_input = model.idxBl_to_var_input(idx_Bl)
    f_hat = torch.zeros(2, model.config.z_channels, pns[-1], pns[-1])
    steps = []
    for si, pn in enumerate(pns):
        h = model.quantize.embedding(idx_Bl[si]).transpose(1, 2).reshape(2, -1, pn, pn)
        f_hat, nxt = model.next_autoregressive_input(si, len(pns), f_hat, h)
        if si < len(pns) - 1:
            steps.append(nxt.flatten(2).transpose(1, 2))
    torch.testing.assert_close(torch.cat(steps, 1), var_input, atol=1e-6, rtol=0)
    torch.testing.assert_close(f_hat, model.quantize.idxBl_to_fhat(idx_Bl), atol=1e-6, rtol=0)


def test_phi_sharing_follows_var_ticks():
    q = _msvq("fmnist").quantize  # 10 scales over 4 shared convs
    convs = list(q.quant_resi.qresi_ls)
    used = [convs.index(q.phi(si)) for si in range(10)]
    assert used == sorted(used) and set(used) == {0, 1, 2, 3} and used[0] == 0 and used[-1] == 3


# ------------------------------------------------------------------------------------ gradients, training
@pytest.mark.parametrize("kind", ["vq", "msvq"])
def test_every_parameter_gets_a_gradient(kind):
    model = _vq() if kind == "vq" else _msvq()
    size = 16 if kind == "vq" else 8
    loss, _, _ = tokenizer_objective(model.train(), _images(4, 3, size), TokenizerLossConfig())
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


@pytest.mark.parametrize("kind", ["vq", "msvq"])
def test_loss_goes_down_on_a_fixed_batch(kind):
    torch.manual_seed(0)
    model = (_vq() if kind == "vq" else _msvq()).train()
    img = _smooth_images(8, 3, 16 if kind == "vq" else 8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    cfg = TokenizerLossConfig()
    losses = []
    for _ in range(30):
        loss, metrics, _ = tokenizer_objective(model, img, cfg)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(metrics["rec_loss"])
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5


def test_gan_wrapper_routes_gradients():
    torch.manual_seed(0)
    tok = _vq()
    disc = PatchDiscriminator(DiscConfig(in_channels=3, ndf=16, n_layers=2, norm_groups=8))
    disc.init_weights()
    wrapper = TokenizerWithDisc(tok, disc).train()
    img = _images(4, 3, 16)
    cfg = TokenizerLossConfig(gan=True, gan_weight=0.5, disc_weight=2.0, gan_start=0)
    loss, metrics = wrapper(img, cfg)
    loss.backward()
    got = {n: p.grad.clone() for n, p in wrapper.named_parameters()}
    assert metrics["gan_on"] == 1.0 and int(wrapper.steps_seen) == 1
    # reference: each part's gradient computed from its own loss only
    wrapper.zero_grad()
    loss_g, _, rec = tokenizer_objective(tok, img, cfg)
    (loss_g + 0.5 * -disc(rec).mean()).backward(inputs=list(tok.parameters()))
    (2.0 * hinge_d_loss(disc(img), disc(rec.detach()))).backward(inputs=list(disc.parameters()))
    for n, p in wrapper.named_parameters():
        torch.testing.assert_close(got[n], p.grad, atol=1e-6, rtol=1e-4, msg=n)
    assert wrapper.export_model() is tok


def test_gan_warmup_switches_terms_off():
    tok = _vq()
    disc = PatchDiscriminator(DiscConfig(in_channels=3, ndf=16, n_layers=1, norm_groups=8))
    disc.init_weights()
    wrapper = TokenizerWithDisc(tok, disc).train()
    img = _images(2, 3, 16)
    loss, metrics = wrapper(img, TokenizerLossConfig(gan_start=10), step=3)
    loss_g, _, _ = tokenizer_objective(tok, img, TokenizerLossConfig())
    assert metrics["gan_on"] == 0.0
    torch.testing.assert_close(loss, loss_g, atol=1e-6, rtol=0)
    _, off = wrapper(img, TokenizerLossConfig(gan=False), step=100)
    assert off["gan_on"] == 0.0


@pytest.mark.parametrize(("task", "size"), [("tokenizer", 16), ("msvq", 8)])
def test_tasks_build_and_loss(task, size):
    t = get_task(task)
    model = t.build_model({"preset": "debug", "dropout": 0.0})
    batch = (_images(2, 3, size), torch.zeros(2, dtype=torch.long))
    loss, metrics = t.loss(model, batch, {"rec_loss": "l1"})
    assert torch.isfinite(loss) and metrics["rec_loss"] > 0 and 0 < metrics["usage"] <= 1
    gan_model = t.build_model({"preset": "debug", "disc": {"ndf": 16, "n_layers": 1, "norm_groups": 8}})
    assert isinstance(gan_model, TokenizerWithDisc)
    loss, metrics = t.loss(gan_model, batch, {"gan": True})
    assert "d_loss" in metrics
    with pytest.raises(ValueError, match="discriminator"):
        t.loss(model, batch, {"gan": True})
    with pytest.raises(ValueError, match="unknown config key"):
        t.loss(model, batch, {"rec_los": "l1"})


# ------------------------------------------------------------------------------------------ I/O, metrics
@pytest.mark.parametrize("kind", ["vq", "msvq"])
def test_save_load_roundtrip(kind, tmp_path):
    model = (_vq() if kind == "vq" else _msvq()).eval()
    path = save_model(model, tmp_path / kind)
    loaded = load_model(path)
    assert type(loaded) is type(model) and loaded.config == model.config
    img = _images(2, 3, 16 if kind == "vq" else 8)
    if kind == "vq":
        assert torch.equal(loaded.encode(img), model.encode(img))
    else:
        pairs = zip(loaded.img_to_idxBl(img), model.img_to_idxBl(img), strict=True)
        assert all(torch.equal(a, b) for a, b in pairs)


def test_reconstruction_metrics_values():
    model = _vq().eval()
    imgs = _images(10, 3, 16)
    out = reconstruction_metrics(
        model, TensorDataset(imgs, torch.zeros(10)), max_images=7, batch_size=4, progress=False
    )
    assert out["n"] == 7
    with torch.no_grad():
        idx = model.encode(imgs[:7])
        rec01, img01 = (model.decode_codes(idx) + 1) / 2, (imgs[:7] + 1) / 2
    mse = (rec01 - img01).square().flatten(1).mean(1)
    assert out["psnr"] == pytest.approx((-10 * torch.log10(mse)).mean().item(), rel=1e-5)
    usage, ppl = usage_stats(idx, model.config.codebook_size)
    assert out["usage"] == pytest.approx(usage.item())
    assert out["perplexity"] == pytest.approx(ppl.item(), rel=1e-5)
    data = TensorDataset(_images(3, 3, 8), torch.zeros(3))
    ms = reconstruction_metrics(_msvq().eval(), data, progress=False)
    assert ms["n"] == 3 and 0 < ms["usage"] <= 1


def test_quantizers_ignore_bf16_autocast():
    vq, ms = _vq().quantize.train(), _msvq().quantize.train()
    z, f = torch.randn(2, 4, 8, 8), torch.randn(2, 8, 4, 4)
    with torch.autocast("cpu", torch.bfloat16):
        zq_a, idx_a, _ = vq(z)
        fhat_a, idx_Bl_a, _ = ms(f)
        var_in_a = ms.idxBl_to_var_input(idx_Bl_a)
    zq, idx, _ = vq(z)
    fhat, idx_Bl, _ = ms(f)
    assert torch.equal(idx_a, idx) and torch.equal(zq_a, zq) and zq_a.dtype == torch.float32
    assert all(torch.equal(a, b) for a, b in zip(idx_Bl_a, idx_Bl, strict=True)) and torch.equal(fhat_a, fhat)
    assert torch.equal(var_in_a, ms.idxBl_to_var_input(idx_Bl))


def test_pluggable_perceptual_term():
    model = _vq().eval()
    img = _images(2, 3, 16)
    base, _, rec = tokenizer_objective(model, img, TokenizerLossConfig())
    cfg = TokenizerLossConfig(perceptual="torch.nn:L1Loss", perceptual_weight=0.5)
    loss, metrics, _ = tokenizer_objective(model, img, cfg)
    torch.testing.assert_close(loss, base + 0.5 * F.l1_loss(rec, img), atol=1e-6, rtol=0)
    assert metrics["perceptual_loss"] == pytest.approx(F.l1_loss(rec, img).item(), rel=1e-5)
    with pytest.raises(ValueError, match="not found"):
        missing = TokenizerLossConfig(perceptual="torch.nn:NoSuchLoss", perceptual_weight=1)
        tokenizer_objective(model, img, missing)
