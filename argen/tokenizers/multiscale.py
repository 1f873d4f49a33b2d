"""Multi-scale residual VQVAE (VAR's tokenizer): key names, shapes and numerics of `vae_ch160v4096z32.pth`.

Shape legend: B batch, C image channels, H/W image size, Cvae code dim, h/w latent grid (= patch_nums[-1]),
pn a scale's side, L total tokens over scales, Bl list over scales of (B, pn*pn).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from argen.config import from_dict, to_dict
from argen.model_io import load_strict, read_official, register
from argen.nn.layers import to_weight_dtype
from argen.tokenizers.quantizer import ResidualQuantizer, ResidualQuantizerConfig
from argen.tokenizers.vqgan import ConvNetConfig, Decoder, Encoder, init_conv_net

VAR_PATCH_NUMS = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)


@dataclass
class MSVQConfig:
    """VAR VQVAE. Defaults = `vae_ch160v4096z32` (256px images, 16x16 latent, 10 scales).

    z_channels: Cvae, the code dimension (the encoder outputs it directly; quant_conv is Cvae -> Cvae).
    patch_nums: scale sides; the last must equal image_size / 2**(len(ch_mult)-1).
    """

    in_channels: int = 3
    ch: int = 160
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    z_channels: int = 32
    dropout: float = 0.0
    vocab_size: int = 4096
    beta: float = 0.25
    using_znorm: bool = False
    quant_conv_ks: int = 3
    quant_resi: float = 0.5
    share_quant_resi: int = 4
    patch_nums: tuple[int, ...] = VAR_PATCH_NUMS
    using_sa: bool = True
    using_mid_sa: bool = True
    norm_groups: int = 32

    def __post_init__(self) -> None:
        self.ch_mult, self.patch_nums = tuple(self.ch_mult), tuple(self.patch_nums)
        if self.quant_conv_ks % 2 != 1:
            raise ValueError(f"quant_conv_ks must be odd (VAR uses 3), got {self.quant_conv_ks}")
        self.net()
        self.quantizer()

    def net(self) -> ConvNetConfig:
        return ConvNetConfig(
            self.in_channels,
            self.in_channels,
            self.ch,
            self.ch_mult,
            self.num_res_blocks,
            self.z_channels,
            self.dropout,
            self.using_sa,
            self.using_mid_sa,
            self.norm_groups,
            "var",
        )

    def quantizer(self) -> ResidualQuantizerConfig:
        return ResidualQuantizerConfig(
            self.vocab_size,
            self.z_channels,
            self.patch_nums,
            self.beta,
            self.quant_resi,
            self.share_quant_resi,
            self.using_znorm,
        )

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def image_size(self) -> int:
        return self.patch_nums[-1] * self.downsample

    @property
    def seq_len(self) -> int:
        return sum(pn * pn for pn in self.patch_nums)


PRESETS: dict[str, MSVQConfig] = {
    "var_vae_ch160v4096z32": MSVQConfig(),
    # the tiny VQVAE of shared/fixtures/official/var_ref_a.safetensors (64px, 4x4 latent)
    "var_ref_a": MSVQConfig(ch=32, z_channels=8, vocab_size=64, patch_nums=(1, 2, 3, 4)),
    # Fashion-MNIST 1x32x32 -> 16x16 latent with VAR's ten scales
    "fmnist": MSVQConfig(
        in_channels=1, ch=32, ch_mult=(1, 2), num_res_blocks=1, z_channels=16, vocab_size=512
    ),
    "debug": MSVQConfig(
        ch=16,
        ch_mult=(1, 2),
        num_res_blocks=1,
        z_channels=8,
        vocab_size=32,
        patch_nums=(1, 2, 3, 4),
        norm_groups=8,
    ),
}


def msvq_config(preset: str = "debug", **overrides) -> MSVQConfig:
    """A preset's config with field overrides (validated)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown MSVQ preset {preset!r}; choose one of {sorted(PRESETS)}")
    return from_dict(MSVQConfig, {**to_dict(PRESETS[preset]), **overrides}, where=preset)


@register("msvq", MSVQConfig)
class MultiScaleVQVAE(nn.Module):
    """Encoder -> quant_conv -> residual multi-scale quantizer -> post_quant_conv -> decoder."""

    def __init__(self, config: MSVQConfig) -> None:
        super().__init__()
        self.config = config
        net = config.net()
        self.encoder = Encoder(net)
        self.decoder = Decoder(net)
        self.quantize = ResidualQuantizer(config.quantizer())
        ks, cv = config.quant_conv_ks, config.z_channels
        self.quant_conv = nn.Conv2d(cv, cv, ks, padding=ks // 2)
        self.post_quant_conv = nn.Conv2d(cv, cv, ks, padding=ks // 2)

    def init_weights(self) -> None:
        init_conv_net(self)
        self.quantize.init_weights()

    def grid_size(self, image_size: int | None = None) -> int:
        """Side of the last scale's token grid (= patch_nums[-1]); checks `image_size` when given."""
        if image_size is not None and image_size != self.config.image_size:
            raise ValueError(f"this MSVQ tokenizer takes {self.config.image_size}px images, got {image_size}")
        return self.config.patch_nums[-1]

    def encode_latent(self, img_BCHW: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1], any float dtype -> continuous latents f (B, Cvae, h, w)."""
        return self.quant_conv(self.encoder(to_weight_dtype(img_BCHW, self)))

    @torch.no_grad()
    def img_to_idxBl(self, img_BCHW: torch.Tensor) -> list[torch.Tensor]:
        """Images in [-1, 1] (B, C, H, W) -> per-scale codes [(B, pn*pn) int64]."""
        return self.quantize.f_to_idxBl(self.encode_latent(img_BCHW))

    def idxBl_to_var_input(self, idx_Bl: list[torch.Tensor]) -> torch.Tensor:
        """Per-scale codes -> VAR teacher-forcing input (B, L - patch_nums[0]**2, Cvae)."""
        return self.quantize.idxBl_to_var_input(idx_Bl)

    def fhat_to_img(self, f_hat_BChw: torch.Tensor) -> torch.Tensor:
        """Accumulated latent f_hat (B, Cvae, h, w), any float dtype -> images (B, C, H, W) in [-1, 1]."""
        return self.decoder(self.post_quant_conv(to_weight_dtype(f_hat_BChw, self))).clamp(-1, 1)

    def idxBl_to_img(self, idx_Bl: list[torch.Tensor]) -> torch.Tensor:
        """Per-scale codes (all scales) -> images (B, C, H, W) in [-1, 1] (decode of the final f_hat)."""
        if len(idx_Bl) != len(self.config.patch_nums):
            raise ValueError(f"need codes for all {len(self.config.patch_nums)} scales, got {len(idx_Bl)}")
        return self.fhat_to_img(self.quantize.idxBl_to_fhat(idx_Bl))

    def next_autoregressive_input(
        self, si: int, num_scales: int, f_hat_BChw: torch.Tensor, h_BChw: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sampling step: add scale si's code embeddings h (B, Cvae, pn, pn) to f_hat (B, Cvae, h, w).

        Returns:
            (new f_hat, next scale's input (B, Cvae, pn_next, pn_next)); at the last scale both are f_hat.
        """
        return self.quantize.next_autoregressive_input(si, num_scales, f_hat_BChw, h_BChw)

    def forward(self, img_BCHW: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Training forward: (reconstruction (B, C, H, W) unclamped, aux with losses, usage and "idx_Bl")."""
        f_hat, idx_Bl, aux = self.quantize(self.encode_latent(img_BCHW))
        aux["idx_Bl"] = idx_Bl
        return self.decoder(self.post_quant_conv(f_hat)), aux


def load_official_msvq(path: str | Path, config: MSVQConfig | None = None) -> MultiScaleVQVAE:
    """Load VAR's `vae_ch160v4096z32.pth` (a plain state dict) into a MultiScaleVQVAE, in eval mode."""
    state = read_official(path)
    model = MultiScaleVQVAE(config or PRESETS["var_vae_ch160v4096z32"])
    load_strict(model, state, source=str(path))
    return model.eval()
