"""VAR's configuration and named presets, apart from the model so its blocks (`var_blocks`) and the model
(`var`) both import it without a cycle."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class VARConfig:
    """VAR transformer.

    depth: number of AdaLN blocks; width (C) defaults to 64*depth and heads to depth (the official rule).
    vocab_size / vae_channels / patch_nums: must match the multi-scale VQVAE (V, Cvae, scales).
    num_classes: class labels; the class table has one extra "null" row for classifier-free guidance.
    attn_l2_norm: cosine attention with a learnable per-head scale (official True); False = 0.25/sqrt(Dh).
    shared_aln: one modulation Linear shared by all blocks plus a per-block learned offset `ada_gss`.
    drop_path_rate: stochastic depth, linearly increasing over blocks (official 0.1*depth/24 in training).
    """

    depth: int = 16
    width: int | None = None
    heads: int | None = None
    vocab_size: int = 4096
    vae_channels: int = 32
    patch_nums: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
    num_classes: int = 1000
    mlp_ratio: float = 4.0
    attn_l2_norm: bool = True
    shared_aln: bool = False
    norm_eps: float = 1e-6
    drop_path_rate: float = 0.0

    def __post_init__(self) -> None:
        self.patch_nums = tuple(int(p) for p in self.patch_nums)
        if self.depth < 1:
            raise ValueError(f"depth must be >= 1, got {self.depth}")
        if self.dim % self.num_heads:
            raise ValueError(
                f"width {self.dim} must be divisible by heads {self.num_heads}; set width or heads"
            )
        if (
            not self.patch_nums
            or any(b <= a for a, b in zip(self.patch_nums, self.patch_nums[1:], strict=False))
            or self.patch_nums[0] < 1
        ):
            raise ValueError(f"patch_nums must be strictly increasing positive sizes, got {self.patch_nums}")
        if self.vocab_size < 2 or self.vae_channels < 1 or self.num_classes < 1:
            raise ValueError("vocab_size >= 2, vae_channels >= 1 and num_classes >= 1 are required")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {self.drop_path_rate}")

    @property
    def dim(self) -> int:
        return self.width if self.width else 64 * self.depth

    @property
    def num_heads(self) -> int:
        return self.heads if self.heads else self.depth

    @property
    def hidden(self) -> int:
        return round(self.dim * self.mlp_ratio)

    @property
    def scale_sizes(self) -> tuple[int, ...]:
        return tuple(p * p for p in self.patch_nums)

    @property
    def seq_len(self) -> int:
        return sum(self.scale_sizes)

    @property
    def scale_bounds(self) -> tuple[tuple[int, int], ...]:
        """(begin, end) token range of each scale in the full sequence."""
        ends = [sum(self.scale_sizes[: i + 1]) for i in range(len(self.patch_nums))]
        return tuple(zip([0, *ends[:-1]], ends, strict=True))


_IMAGENET = dict(vocab_size=4096, vae_channels=32, num_classes=1000)
PRESETS: dict[str, dict] = {
    "debug": dict(
        depth=2, width=64, heads=2, vocab_size=64, vae_channels=8, patch_nums=(1, 2, 3, 4), num_classes=10
    ),
    "S": dict(depth=12, **_IMAGENET),
    "d16": dict(depth=16, **_IMAGENET),
    "d20": dict(depth=20, **_IMAGENET),
    "d24": dict(depth=24, **_IMAGENET),
    "d30": dict(depth=30, **_IMAGENET),
    # Fashion-MNIST 32x32 with a /2 multi-scale VQVAE: the ImageNet-256 16x16 token grid and scales.
    "fmnist": dict(depth=6, vocab_size=512, vae_channels=16, num_classes=10),
}


def var_config(preset: str, **overrides) -> VARConfig:
    """Config of a named preset with field overrides."""
    if preset not in PRESETS:
        raise ValueError(f"unknown VAR preset {preset!r}; choose one of {sorted(PRESETS)}")
    return VARConfig(**{**PRESETS[preset], **overrides})
