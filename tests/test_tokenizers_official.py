"""Tokenizers against the official implementations: key/shape lists and the VAR VQVAE fixture numerics."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from argen.models.checkpoints import CheckpointError, load_strict
from argen.tokenizers import multiscale, vqgan
from argen.tokenizers.multiscale import MultiScaleVQVAE, load_official_msvq
from argen.tokenizers.vqgan import VQModel, load_official_vq


def _keys_on_meta(model_cls, config) -> dict[str, list[int]]:
    with torch.device("meta"):  # the real models are 70-90M parameters: never allocate them here
        model = model_cls(config)
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def test_llamagen_vq16_keys_and_shapes(fixtures_dir):
    ref = json.loads((fixtures_dir / "llamagen_official_keys.json").read_text())["vq_ds16_c2i"]
    ours = _keys_on_meta(VQModel, vqgan.PRESETS["llamagen_vq16"])
    assert list(ours.items()) == list(ref.items())  # same keys, shapes and order


def test_var_vae_keys_and_shapes(fixtures_dir):
    ref = json.loads((fixtures_dir / "var_official_keys.json").read_text())["vae_ch160v4096z32"]
    ours = _keys_on_meta(MultiScaleVQVAE, multiscale.PRESETS["var_vae_ch160v4096z32"])
    assert list(ours.items()) == list(ref.items())


@pytest.fixture(scope="module")
def var_ref(fixtures_dir):
    with safe_open(str(fixtures_dir / "var_ref_a.safetensors"), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        config = json.loads(f.metadata()["config"])
    state = {k.removeprefix("vae."): v for k, v in tensors.items() if k.startswith("vae.")}
    return tensors, state, config


@pytest.fixture(scope="module")
def var_vae(var_ref, tmp_path_factory):
    _, state, _ = var_ref
    path = tmp_path_factory.mktemp("var") / "vae_tiny.pth"
    torch.save(state, path)  # the official format: a plain state dict
    return load_official_msvq(path, multiscale.PRESETS["var_ref_a"])


def test_var_ref_preset_matches_fixture_config(var_ref):
    _, state, config = var_ref
    cfg = multiscale.PRESETS["var_ref_a"]
    assert cfg.patch_nums == tuple(config["patch_nums"])
    assert (cfg.vocab_size, cfg.z_channels, cfg.ch) == (config["V"], config["Cvae"], config["ch"])
    assert (cfg.quant_resi, cfg.share_quant_resi) == (config["quant_resi"], config["share_quant_resi"])
    assert state["quantize.embedding.weight"].shape == (cfg.vocab_size, cfg.z_channels)


def test_var_img_to_idxBl_exact(var_ref, var_vae):
    tensors, _, _ = var_ref
    idx_Bl = var_vae.img_to_idxBl(tensors["in.img"])
    assert len(idx_Bl) == 4
    for si, idx in enumerate(idx_Bl):
        assert idx.dtype == torch.int64
        assert torch.equal(idx, tensors[f"out.idx.{si}"]), f"scale {si} codes differ"


def test_var_teacher_forcing_input(var_ref, var_vae):
    tensors, _, _ = var_ref
    idx_Bl = [tensors[f"out.idx.{si}"] for si in range(4)]
    with torch.no_grad():
        var_input = var_vae.idxBl_to_var_input(idx_Bl)
    torch.testing.assert_close(var_input, tensors["out.var_input"], atol=1e-5, rtol=0)


def test_var_decode(var_ref, var_vae):
    tensors, _, _ = var_ref
    idx_Bl = [tensors[f"out.idx.{si}"] for si in range(4)]
    with torch.no_grad():
        rec = var_vae.idxBl_to_img(idx_Bl)
        rec64 = var_vae.to(torch.float64).idxBl_to_img(idx_Bl)
    var_vae.float()
    ref = tensors["out.rec"]
    # The decoder is ~30 random convs deep, so fp32 rounding reaches ~3e-5: the fixture itself is 1.4e-5 from
    # our float64 decode. 1e-5 is met in float64; fp32 kernels (oneDNN vs reference) get 5e-5.
    torch.testing.assert_close(rec64, ref.double(), atol=2e-5, rtol=0)
    torch.testing.assert_close(rec, ref, atol=5e-5, rtol=0)
    assert rec.abs().max() <= 1


def test_official_loaders_reject_corrupt_files(tmp_path):
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"\x80\x04not really a checkpoint")
    with pytest.raises(CheckpointError):
        load_official_msvq(bad)
    with pytest.raises(CheckpointError):
        load_official_vq(bad)
    with pytest.raises(CheckpointError, match="not found"):
        load_official_vq(tmp_path / "missing.pt")


def test_load_official_vq_roundtrip_and_mismatch(tmp_path):
    cfg = vqgan.PRESETS["debug"]
    model = VQModel(cfg)
    model.init_weights()
    path = tmp_path / "vq.pt"
    torch.save({"model": model.state_dict(), "optimizer": {}}, path)  # LlamaGen layout
    loaded = load_official_vq(path, cfg)
    img = torch.rand(2, 3, 16, 16) * 2 - 1
    assert torch.equal(loaded.encode(img), model.encode(img))
    with pytest.raises(CheckpointError, match="does not match"):
        load_official_vq(path)  # LlamaGen VQ-16 shapes expected: readable mismatch report
    state = model.state_dict()
    state.pop("quant_conv.bias")
    with pytest.raises(CheckpointError, match="missing"):
        load_strict(VQModel(cfg), state)
