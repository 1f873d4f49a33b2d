"""VAR training objective: task registration, label dropout, progressive scales, loss going down."""

from __future__ import annotations

import pytest
import torch
from test_var_sampling import StubVQVAE

from argen.config import TrainConfig
from argen.models.var import VAR
from argen.training.objectives import var_loss, var_progressive_scales
from argen.training.tasks import get_task


def _data(model: VAR, n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    cfg = model.config
    g = torch.Generator().manual_seed(0)
    # a learnable pattern: each class has its own code sequence, tokens drawn from a few codes per class
    labels = torch.arange(n) % cfg.num_classes
    codes = (labels[:, None] * 7 + torch.randint(0, 3, (n, cfg.seq_len), generator=g)) % cfg.vocab_size
    return codes, labels


def test_task_builds_var_and_needs_tokens_or_a_vqvae():
    task = get_task("var")
    model = task.build_model({"preset": "debug", "depth": 3})
    assert isinstance(model, VAR) and model.config.depth == 3 and model.config.dim == 64
    with pytest.raises(ValueError, match=r"data\.source=tokens"):
        task.build_dataset(TrainConfig(task="var"))


def test_loss_decreases_on_debug_model():
    torch.manual_seed(0)
    model = get_task("var").build_model({"preset": "debug"}).train()
    vae = StubVQVAE(
        model.config.vocab_size, model.config.vae_channels, model.config.patch_nums
    ).requires_grad_(False)
    codes, labels = _data(model)
    opts = {"vqvae": vae, "label_dropout": 0.1}
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss, metrics = var_loss(model, (codes, labels), opts)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(metrics["loss"])
    assert metrics["scales"] == len(model.config.patch_nums)
    assert losses[0] > 3.5  # about log(64) at the start
    assert sum(losses[-5:]) / 5 < 0.6 * losses[0], losses


def test_label_dropout_uses_null_class(monkeypatch):
    model = get_task("var").build_model({"preset": "debug"})
    vae = StubVQVAE(model.config.vocab_size, model.config.vae_channels, model.config.patch_nums)
    codes, labels = _data(model, 4)
    seen = []
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda lab, x: seen.append(lab.clone()) or forward(lab, x))
    var_loss(model, (codes, labels), {"vqvae": vae, "label_dropout": 1.0})
    var_loss(model, (codes, labels), {"vqvae": vae, "label_dropout": 0.0})
    assert torch.equal(seen[0], torch.full_like(labels, model.config.num_classes))
    assert torch.equal(seen[1], labels)


def test_progressive_scales_and_errors():
    assert var_progressive_scales(10, {}) == 10
    opts = {"progressive_steps": 100, "progressive_start": 2}
    counts = [var_progressive_scales(10, {**opts, "step": s}) for s in (0, 50, 100, 1000)]
    assert counts == [2, 6, 10, 10]
    with pytest.raises(ValueError, match="step"):
        var_progressive_scales(10, {"progressive_steps": 5})
    model = get_task("var").build_model({"preset": "debug"})
    vae = StubVQVAE(model.config.vocab_size, model.config.vae_channels, model.config.patch_nums)
    codes, labels = _data(model, 2)
    loss, metrics = var_loss(model, (codes, labels), {"vqvae": vae, "progressive_steps": 10, "step": 0})
    assert metrics["scales"] == 1 and torch.isfinite(loss)
    with pytest.raises(ValueError, match=r"objective\.vqvae"):
        var_loss(model, (codes, labels), {})
    with pytest.raises(ValueError, match="positions"):
        var_loss(model, (codes[:, :5], labels), {"vqvae": vae})


def test_loss_with_msvq_model_file(tmp_path):
    multiscale = pytest.importorskip("argen.tokenizers.multiscale")
    from argen.models.checkpoints import save_model
    from argen.sampling.next_scale import NextScaleConfig, sample_next_scale, sample_next_scale_reference

    vae = multiscale.MultiScaleVQVAE(multiscale.msvq_config("debug"))
    vae.init_weights()
    vc = vae.config
    path = save_model(vae, tmp_path / "msvq")
    model = get_task("var").build_model(
        {
            "preset": "debug",
            "patch_nums": vc.patch_nums,
            "vocab_size": vc.vocab_size,
            "vae_channels": vc.z_channels,
        }
    )
    img = torch.rand(3, vc.in_channels, vc.image_size, vc.image_size) * 2 - 1
    codes = torch.cat(vae.img_to_idxBl(img), dim=1)
    loss, metrics = var_loss(model, (codes, torch.tensor([0, 1, 2])), {"vqvae": str(path)})
    loss.backward()
    assert torch.isfinite(loss) and metrics["scales"] == len(vc.patch_nums)
    # the real tokenizer drives both samplers to the same tokens
    model.eval()
    cfg = NextScaleConfig()
    fast = sample_next_scale(model, vae.eval(), torch.tensor([3, 4]), cfg)
    ref = sample_next_scale_reference(model, vae, torch.tensor([3, 4]), cfg)
    assert all(torch.equal(a, b) for a, b in zip(fast.tokens, ref.tokens, strict=True))
    assert fast.images.shape == (2, vc.in_channels, vc.image_size, vc.image_size)
    torch.testing.assert_close(fast.images, ref.images, atol=1e-5, rtol=0)
