"""Tokenizer training losses: reconstruction, codebook/commitment, optional PatchGAN adversarial term.

The trainer has one optimizer over all parameters of the model it is given, so GAN training wraps the
tokenizer and a discriminator in `TokenizerWithDisc`, whose single loss gives each part the right gradient:
the discriminator learns from detached reconstructions, the generator's adversarial term goes through the
discriminator with detached parameters (`torch.func.functional_call`).

Shape legend: B batch, C channels, H/W image size, h/w discriminator patch grid.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from argen.config import from_dict

# (reconstruction, target) -> scalar; e.g. an LPIPS module the user provides (argen ships none)
PerceptualFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class TokenizerLossConfig:
    """Weights of the tokenizer objective (`--set objective.<field>=...`).

    rec_loss: "l1" or "l2" pixel loss.
    gan: None = adversarial terms iff the model has a discriminator (`model.disc`); True requires one;
        False keeps a discriminator idle (its terms are weighted 0).
    gan_start: step from which the adversarial terms are switched on (warm-up without GAN).
    perceptual: "package.module:factory" of a user-provided perceptual loss (e.g. LPIPS, not shipped);
        the factory takes no argument and returns a callable (rec, img) -> loss. Used when
        perceptual_weight > 0.
    """

    rec_loss: str = "l2"
    rec_weight: float = 1.0
    codebook_weight: float = 1.0
    commit_weight: float = 1.0
    perceptual_weight: float = 0.0
    perceptual: str | None = None
    gan: bool | None = None
    gan_weight: float = 0.1
    disc_weight: float = 1.0
    gan_start: int = 0

    def __post_init__(self) -> None:
        if self.rec_loss not in ("l1", "l2"):
            raise ValueError(f"rec_loss must be 'l1' or 'l2', got {self.rec_loss!r}")
        if (
            min(self.rec_weight, self.codebook_weight, self.commit_weight, self.gan_weight, self.disc_weight)
            < 0
        ):
            raise ValueError("loss weights must be >= 0")
        if self.gan_start < 0:
            raise ValueError("gan_start must be >= 0 (a step number)")
        if self.perceptual_weight > 0 and self.perceptual is not None and ":" not in self.perceptual:
            raise ValueError(f"perceptual must look like 'package.module:factory', got {self.perceptual!r}")


@functools.cache
def load_perceptual(spec: str) -> PerceptualFn:
    """Build (once per process) the perceptual loss named "package.module:factory"."""
    module, _, name = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"perceptual loss {spec!r} not found ({e}); give 'package.module:factory'") from e
    return factory()


def reconstruction_loss(rec_BCHW: torch.Tensor, img_BCHW: torch.Tensor, kind: str = "l2") -> torch.Tensor:
    """Mean L1 or L2 pixel loss."""
    return F.l1_loss(rec_BCHW, img_BCHW) if kind == "l1" else F.mse_loss(rec_BCHW, img_BCHW)


# ------------------------------------------------------------------------------------------ PatchGAN
@dataclass
class DiscConfig:
    """PatchGAN discriminator: `n_layers` stride-2 4x4 convs from width `ndf` (doubling, capped at 8*ndf)."""

    in_channels: int = 3
    ndf: int = 64
    n_layers: int = 3
    norm_groups: int = 32

    def __post_init__(self) -> None:
        if self.n_layers < 1 or self.ndf < 1:
            raise ValueError("n_layers and ndf must be >= 1")
        if self.ndf % self.norm_groups:
            raise ValueError(f"ndf {self.ndf} must be divisible by norm_groups {self.norm_groups}")


class PatchDiscriminator(nn.Module):
    """Images (B, C, H, W) in [-1, 1] -> real/fake logits per patch (B, 1, h, w).

    GroupNorm rather than BatchNorm: no running statistics, so the functional call through it is pure.
    """

    def __init__(self, config: DiscConfig) -> None:
        super().__init__()
        self.config = config
        c, layers = config.ndf, [nn.Conv2d(config.in_channels, config.ndf, 4, 2, 1), nn.LeakyReLU(0.2)]
        for i in range(1, config.n_layers + 1):
            c_out = config.ndf * min(2**i, 8)
            stride = 2 if i < config.n_layers else 1
            layers += [
                nn.Conv2d(c, c_out, 4, stride, 1, bias=False),
                nn.GroupNorm(config.norm_groups, c_out),
                nn.LeakyReLU(0.2),
            ]
            c = c_out
        layers.append(nn.Conv2d(c, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)

    def init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.GroupNorm):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, img_BCHW: torch.Tensor) -> torch.Tensor:
        return self.net(img_BCHW)


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean())


class TokenizerWithDisc(nn.Module):
    """Training wrapper: a tokenizer (`.tokenizer`, the only part exported) plus a PatchGAN (`.disc`).

    `steps_seen` counts training forwards (a persistent buffer, so resuming keeps the GAN warm-up).
    """

    def __init__(self, tokenizer: nn.Module, disc: PatchDiscriminator) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.disc = disc
        self.config = tokenizer.config
        self.register_buffer("steps_seen", torch.zeros((), dtype=torch.long))

    def init_weights(self) -> None:
        self.tokenizer.init_weights()
        self.disc.init_weights()

    def export_model(self) -> nn.Module:
        """The module to save after training (the tokenizer alone)."""
        return self.tokenizer

    def forward(
        self,
        img_BCHW: torch.Tensor,
        cfg: TokenizerLossConfig,
        perceptual: PerceptualFn | None = None,
        step: int | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Full objective (tokenizer + adversarial + discriminator) in one scalar; see module docstring."""
        loss, metrics, rec = tokenizer_objective(self.tokenizer, img_BCHW, cfg, perceptual)
        step = int(self.steps_seen) if step is None else step
        if self.training:
            self.steps_seen += 1
        # before gan_start the terms are weighted 0, not skipped: every parameter is used in each step (DDP)
        on = float(cfg.gan is not False and step >= cfg.gan_start)
        frozen = {k: v.detach() for k, v in self.disc.named_parameters()}
        g_adv = -functional_call(self.disc, frozen, (rec,)).mean()
        d_loss = hinge_d_loss(self.disc(img_BCHW.detach()), self.disc(rec.detach()))
        loss = loss + on * (cfg.gan_weight * g_adv + cfg.disc_weight * d_loss)
        metrics.update(g_adv=g_adv.item(), d_loss=d_loss.item(), gan_on=on)
        return loss, metrics


def tokenizer_objective(
    model: nn.Module, img_BCHW: torch.Tensor, cfg: TokenizerLossConfig, perceptual: PerceptualFn | None = None
) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
    """Reconstruction + codebook + commitment (+ perceptual) loss of a VQModel or MultiScaleVQVAE.

    Returns:
        (scalar loss, metrics, reconstruction (B, C, H, W) with its graph, for an adversarial term).
    """
    rec, aux = model(img_BCHW)
    rec_loss = reconstruction_loss(rec, img_BCHW, cfg.rec_loss)
    loss = (
        cfg.rec_weight * rec_loss
        + cfg.codebook_weight * aux["codebook_loss"]
        + cfg.commit_weight * aux["commit_loss"]
    )
    metrics: dict[str, Any] = {
        "rec_loss": rec_loss.item(),
        "codebook_loss": aux["codebook_loss"].item(),
        "commit_loss": aux["commit_loss"].item(),
        "usage": float(aux["usage"]),
        "perplexity": float(aux["perplexity"]),
    }
    if perceptual is None and cfg.perceptual is not None:
        perceptual = load_perceptual(cfg.perceptual)
    if perceptual is not None and cfg.perceptual_weight > 0:
        if isinstance(perceptual, nn.Module):
            perceptual.to(img_BCHW.device)
        p_loss = perceptual(rec, img_BCHW).mean()
        loss = loss + cfg.perceptual_weight * p_loss
        metrics["perceptual_loss"] = p_loss.item()
    with torch.no_grad():
        mse01 = F.mse_loss(rec.detach().clamp(-1, 1), img_BCHW) / 4  # images in [-1, 1] -> MSE on [0, 1]
        metrics["psnr"] = (-10 * torch.log10(mse01.clamp_min(1e-10))).item()
    return loss, metrics, rec


def tokenizer_loss(
    model: nn.Module, batch: Any, opts: dict[str, Any], perceptual: PerceptualFn | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    """Task loss: `batch` = (images (B, C, H, W) in [-1, 1], labels); `opts` = TokenizerLossConfig fields.

    The model may be wrapped (DDP/FSDP: `.module`); a `TokenizerWithDisc` adds the adversarial terms.
    An optional `opts["step"]` (injected by the trainer) drives the GAN warm-up instead of `steps_seen`.
    """
    opts = dict(opts)
    step = opts.pop("step", None)
    cfg = from_dict(TokenizerLossConfig, opts, where="objective")
    img = batch[0] if isinstance(batch, list | tuple) else batch
    # a DDP wrapper hides `.disc`; the trainer's DDP view and plain modules expose it
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    if isinstance(getattr(inner, "disc", None), PatchDiscriminator):
        return model(img, cfg, perceptual, step)
    if cfg.gan:
        raise ValueError("objective.gan=true needs a discriminator: set model.disc={} (or disc options)")
    loss, metrics, _ = tokenizer_objective(model, img, cfg, perceptual)
    return loss, metrics
