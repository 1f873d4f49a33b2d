"""Single-scale VQ tokenizer (LlamaGen VQ-16 compatible) and the conv encoder/decoder shared with VAR's VQVAE.

Shape legend: B batch, C channels, H/W image or latent size, Z z_channels, D code dim, h/w token grid.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from argen.config import from_dict, to_dict
from argen.model_io import load_strict, read_official, register
from argen.nn.attention import attention
from argen.nn.layers import to_weight_dtype
from argen.tokenizers.quantizer import VectorQuantizer, VectorQuantizerConfig


# ------------------------------------------------------------------------------------ conv building blocks
@dataclass
class ConvNetConfig:
    """Encoder/decoder shape. `layout` only picks the state-dict names: "llamagen" or "var".

    Encoder: levels with `num_res_blocks` residual blocks each (decoder: one more), width ch*ch_mult[i],
    downsampling x2 between levels, self-attention after each block of the lowest-resolution level
    (`level_attn`) and in the middle (`mid_attn`).
    """

    in_channels: int = 3
    out_channels: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    z_channels: int = 256
    dropout: float = 0.0
    level_attn: bool = True
    mid_attn: bool = True
    norm_groups: int = 32
    layout: str = "llamagen"

    def __post_init__(self) -> None:
        self.ch_mult = tuple(self.ch_mult)
        if self.layout not in ("llamagen", "var"):
            raise ValueError(f"layout must be 'llamagen' or 'var', got {self.layout!r}")
        if not self.ch_mult or self.num_res_blocks < 1:
            raise ValueError("ch_mult must be non-empty and num_res_blocks >= 1")
        bad = [self.ch * m for m in self.ch_mult if (self.ch * m) % self.norm_groups]
        if bad:
            raise ValueError(
                f"widths {bad} are not divisible by norm_groups={self.norm_groups}; "
                "change ch/ch_mult or norm_groups"
            )

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=1e-6, affine=True)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, dropout: float, groups: int) -> None:
        super().__init__()
        self.norm1 = _norm(cin, groups)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = _norm(cout, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x_BCHW)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.nin_shortcut(x_BCHW) + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention; VAR fuses q/k/v into one conv (`qkv`), LlamaGen does not."""

    def __init__(self, channels: int, groups: int, fused_qkv: bool) -> None:
        super().__init__()
        self.norm = _norm(channels, groups)
        self.fused = fused_qkv
        if fused_qkv:
            self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        else:
            self.q, self.k, self.v = (nn.Conv2d(channels, channels, 1) for _ in range(3))
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x_BCHW.shape
        h = self.norm(x_BCHW)
        q, k, v = self.qkv(h).chunk(3, dim=1) if self.fused else (self.q(h), self.k(h), self.v(h))
        q, k, v = (t.reshape(B, 1, C, H * W).transpose(2, 3) for t in (q, k, v))
        out_BCHW = _attend(q, k, v).transpose(2, 3).reshape(B, C, H, W)
        return x_BCHW + self.proj_out(out_BCHW)


# Images per attention step on CPU: their (L, L) scores (1 MB at L = 256) stay in L2 cache from the matmul
# through the softmax to the next matmul; a 32-image chunk's 8 MB went out to memory and back twice.
_ATTEND_IMAGES = 4


def _attend(q_B1LD: torch.Tensor, k_B1LD: torch.Tensor, v_B1LD: torch.Tensor) -> torch.Tensor:
    """Full attention (B, 1, L, D). SDPA runs its math path on these strided views; on CPU in fp32 this is
    that path's arithmetic, bitwise (tests/test_tokenize_fast.py), less its `_safe_softmax` checks for rows
    with every key masked, which cannot occur without a mask and took a third of the attention's time. Each
    image's products are the same whichever images share its step (batched matmuls, row-wise softmax)."""
    if q_B1LD.device.type != "cpu" or q_B1LD.dtype != torch.float32:
        return attention(q_B1LD, k_B1LD, v_B1LD)  # (in bf16 the math path computes in fp32)
    scale = math.sqrt(1.0 / math.sqrt(q_B1LD.shape[-1]))  # on q and on k, as SDPA's math path scales them
    out = []
    for b in range(0, len(q_B1LD), _ATTEND_IMAGES):
        q, k, v = (t[b : b + _ATTEND_IMAGES] for t in (q_B1LD, k_B1LD, v_B1LD))
        scores_B1LL = (q * scale) @ (k.transpose(-2, -1) * scale)
        out.append(torch.softmax(scores_B1LL, dim=-1) @ v)
    return torch.cat(out) if len(out) > 1 else out[0]


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        # asymmetric right/bottom padding: the official tokenizers' convention
        return self.conv(F.pad(x_BCHW, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x_BCHW, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """Residual blocks (+ attention after each) then an optional resampler, under layout-specific names."""

    def __init__(
        self,
        blocks: list[nn.Module],
        attns: list[nn.Module],
        resample: nn.Module | None,
        block_name: str,
        resample_name: str,
    ) -> None:
        super().__init__()
        self.block_name = block_name
        setattr(self, block_name, nn.ModuleList(blocks))
        self.attn = nn.ModuleList(attns)
        self.resample_name = resample_name if resample is not None else None
        if resample is not None:
            setattr(self, resample_name, resample)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(getattr(self, self.block_name)):
            x_BCHW = block(x_BCHW)
            if len(self.attn):
                x_BCHW = self.attn[i](x_BCHW)
        return x_BCHW if self.resample_name is None else getattr(self, self.resample_name)(x_BCHW)


def _mid(cfg: ConvNetConfig, width: int) -> nn.Sequential:
    g, fused = cfg.norm_groups, cfg.layout == "var"
    attn = AttnBlock(width, g, fused) if cfg.mid_attn else nn.Identity()
    parts = [ResBlock(width, width, cfg.dropout, g), attn, ResBlock(width, width, cfg.dropout, g)]
    if cfg.layout == "var":
        return nn.Sequential(OrderedDict(zip(("block_1", "attn_1", "block_2"), parts, strict=True)))
    return nn.Sequential(*parts)


class Encoder(nn.Module):
    """Image (B, in_channels, H, W) -> latent (B, Z, H/ds, W/ds)."""

    def __init__(self, config: ConvNetConfig) -> None:
        super().__init__()
        cfg, g, fused = config, config.norm_groups, config.layout == "var"
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, padding=1)
        levels, cin, n = [], cfg.ch, len(cfg.ch_mult)
        for i, m in enumerate(cfg.ch_mult):
            cout = cfg.ch * m
            blocks = [
                ResBlock(cin if j == 0 else cout, cout, cfg.dropout, g) for j in range(cfg.num_res_blocks)
            ]
            attns = [AttnBlock(cout, g, fused) for _ in blocks] if (cfg.level_attn and i == n - 1) else []
            resample = Downsample(cout) if i != n - 1 else None
            levels.append(Level(blocks, attns, resample, "block" if fused else "res", "downsample"))
            cin = cout
        setattr(self, "down" if fused else "conv_blocks", nn.ModuleList(levels))
        self.levels = levels  # plain list: forward order, no extra state-dict entries
        self.mid = _mid(cfg, cin)
        self.norm_out = _norm(cin, g)
        self.conv_out = nn.Conv2d(cin, cfg.z_channels, 3, padding=1)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x_BCHW)
        for level in self.levels:
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h))))


class Decoder(nn.Module):
    """Latent (B, Z, h, w) -> image (B, out_channels, h*ds, w*ds), unclamped."""

    def __init__(self, config: ConvNetConfig) -> None:
        super().__init__()
        cfg, g, fused = config, config.norm_groups, config.layout == "var"
        cin, n = cfg.ch * cfg.ch_mult[-1], len(cfg.ch_mult)
        self.conv_in = nn.Conv2d(cfg.z_channels, cin, 3, padding=1)
        self.mid = _mid(cfg, cin)
        levels = []  # in processing order: lowest resolution first
        for i, m in enumerate(reversed(cfg.ch_mult)):
            cout = cfg.ch * m
            blocks = [
                ResBlock(cin if j == 0 else cout, cout, cfg.dropout, g) for j in range(cfg.num_res_blocks + 1)
            ]
            attns = [AttnBlock(cout, g, fused) for _ in blocks] if (cfg.level_attn and i == 0) else []
            resample = Upsample(cout) if i != n - 1 else None
            levels.append(Level(blocks, attns, resample, "block" if fused else "res", "upsample"))
            cin = cout
        # VAR indexes `up` by resolution level (up.0 = full resolution); LlamaGen by processing order
        setattr(self, "up" if fused else "conv_blocks", nn.ModuleList(levels[::-1] if fused else levels))
        self.levels = levels
        self.norm_out = _norm(cin, g)
        self.conv_out = nn.Conv2d(cin, cfg.out_channels, 3, padding=1)

    def forward(self, z_BZHW: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z_BZHW))
        for level in self.levels:
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))

    @property
    def last_layer(self) -> torch.Tensor:
        return self.conv_out.weight


def init_conv_net(module: nn.Module) -> None:
    """Default PyTorch init for convs, identity affine for GroupNorm (meta-device friendly)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            m.reset_parameters()
        elif isinstance(m, nn.GroupNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------------------------- VQModel
@dataclass
class VQConfig:
    """LlamaGen-style VQ tokenizer. Defaults = LlamaGen VQ-16 (ImageNet, 16384 codes of dim 8)."""

    in_channels: int = 3
    out_channels: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    z_channels: int = 256
    dropout: float = 0.0
    codebook_size: int = 16384
    codebook_dim: int = 8
    codebook_l2_norm: bool = True
    beta: float = 0.25
    usage_window: int = 65536
    norm_groups: int = 32

    def __post_init__(self) -> None:
        self.ch_mult = tuple(self.ch_mult)
        self.net()  # validates widths
        self.quantizer()

    def net(self) -> ConvNetConfig:
        return ConvNetConfig(
            self.in_channels,
            self.out_channels,
            self.ch,
            self.ch_mult,
            self.num_res_blocks,
            self.z_channels,
            self.dropout,
            True,
            True,
            self.norm_groups,
            "llamagen",
        )

    def quantizer(self) -> VectorQuantizerConfig:
        return VectorQuantizerConfig(
            self.codebook_size, self.codebook_dim, self.beta, self.codebook_l2_norm, self.usage_window
        )

    @property
    def vocab_size(self) -> int:
        return self.codebook_size


PRESETS: dict[str, VQConfig] = {
    "llamagen_vq16": VQConfig(),
    # Fashion-MNIST 1x32x32 -> 16x16 tokens; small enough to train on a laptop CPU in minutes
    "fmnist": VQConfig(
        in_channels=1,
        out_channels=1,
        ch=32,  # widths 32 @ 32x32, 64 @ 16x16: ~0.8M parameters, ~1.9 GFLOP per image and training step
        ch_mult=(1, 2),
        num_res_blocks=1,
        z_channels=64,
        codebook_size=512,
        codebook_dim=8,
        usage_window=16384,
    ),
    "debug": VQConfig(
        ch=16,
        ch_mult=(1, 2),
        num_res_blocks=1,
        z_channels=16,
        codebook_size=32,
        codebook_dim=4,
        usage_window=1024,
        norm_groups=8,
    ),
}


def vq_config(preset: str = "debug", **overrides) -> VQConfig:
    """A preset's config with field overrides (validated)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown VQ preset {preset!r}; choose one of {sorted(PRESETS)}")
    return from_dict(VQConfig, {**to_dict(PRESETS[preset]), **overrides}, where=preset)


@register("vq", VQConfig)
class VQModel(nn.Module):
    """Conv encoder -> 1x1 quant_conv -> nearest code -> 1x1 post_quant_conv -> conv decoder."""

    def __init__(self, config: VQConfig) -> None:
        super().__init__()
        self.config = config
        net = config.net()
        self.encoder = Encoder(net)
        self.decoder = Decoder(net)
        self.quantize = VectorQuantizer(config.quantizer())
        self.quant_conv = nn.Conv2d(config.z_channels, config.codebook_dim, 1)
        self.post_quant_conv = nn.Conv2d(config.codebook_dim, config.z_channels, 1)

    def init_weights(self) -> None:
        init_conv_net(self)
        self.quantize.init_weights()

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.config.ch_mult) - 1)

    def grid_size(self, image_size: int) -> int:
        """Token grid side for square images of side `image_size`."""
        if image_size % self.downsample:
            raise ValueError(
                f"image size {image_size} must be a multiple of the downsampling {self.downsample}"
            )
        return image_size // self.downsample

    def encode_latent(self, img_BCHW: torch.Tensor) -> torch.Tensor:
        """Pre-quantization latents (B, D, h, w) of images in any float dtype."""
        return self.quant_conv(self.encoder(to_weight_dtype(img_BCHW, self)))

    @torch.no_grad()
    def encode(self, img_BCHW: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] (B, C, H, W) -> codes (B, h, w) int64."""
        return self.quantize.nearest(self.encode_latent(img_BCHW))

    def decode_latent(self, zq_BDhw: torch.Tensor) -> torch.Tensor:
        """Quantized latents (B, D, h, w), any float dtype -> images (B, C, H, W) in the weights' dtype."""
        return self.decoder(self.post_quant_conv(to_weight_dtype(zq_BDhw, self)))

    def decode_codes(self, idx_Bhw: torch.Tensor) -> torch.Tensor:
        """Codes (B, h, w) -> images (B, C, H, W) clamped to [-1, 1]."""
        return self.decode_latent(self.quantize.embed(idx_Bhw)).clamp(-1, 1)

    def forward(self, img_BCHW: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Training forward: (reconstruction (B, C, H, W) unclamped, aux with losses, usage and "idx")."""
        zq, idx_Bhw, aux = self.quantize(self.encode_latent(img_BCHW))
        aux["idx"] = idx_Bhw
        return self.decode_latent(zq), aux


def load_official_vq(path: str | Path, config: VQConfig | None = None) -> VQModel:
    """Load the LlamaGen VQ-16 checkpoint (`vq_ds16_c2i.pt`, weights under "model"), in eval mode."""
    state = read_official(path, key="model")
    model = VQModel(config or PRESETS["llamagen_vq16"])
    load_strict(model, state, source=str(path))
    return model.eval()
