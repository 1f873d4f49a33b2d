"""A small CNN classifier of Fashion-MNIST-like images (kind "classifier"), used by `argen.eval.classifier`
for the class accuracy of samples and a non-standard "domain" feature space.

Shape legend: B batch, C channels, H/W pixels, F penultimate feature dim, K classes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from argen.config import from_dict
from argen.model_io import register
from argen.nn.layers import to_weight_dtype


@dataclass
class ClassifierConfig:
    """CNN: per entry of `channels` a stage of `convs_per_stage` conv3x3-GroupNorm-ReLU and a 2x2 maxpool,
    then global average pool, Linear -> `feat_dim` (the penultimate features), Linear -> `num_classes`."""

    in_channels: int = 1
    image_size: int = 32
    num_classes: int = 10
    channels: tuple[int, ...] = (32, 64, 128)
    convs_per_stage: int = 1
    feat_dim: int = 128
    dropout: float = 0.1

    def __post_init__(self) -> None:
        self.channels = tuple(self.channels)
        if not self.channels or any(c % 4 for c in self.channels):
            raise ValueError(
                f"channels {self.channels} must be a non-empty list of multiples of 4 (GroupNorm)"
            )
        if self.image_size % (2 ** len(self.channels)):
            raise ValueError(f"image_size {self.image_size} must be divisible by 2**len(channels)")
        if self.num_classes < 2 or self.feat_dim < 1 or self.convs_per_stage < 1 or not 0 <= self.dropout < 1:
            raise ValueError(
                "need num_classes >= 2, feat_dim >= 1, convs_per_stage >= 1 and 0 <= dropout < 1"
            )


PRESETS: dict[str, ClassifierConfig] = {
    "fmnist": ClassifierConfig(),
    "debug": ClassifierConfig(channels=(8, 16), feat_dim=16),
}


@register("classifier", ClassifierConfig)
class Classifier(nn.Module):
    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        c_in = config.in_channels
        for c in config.channels:
            for _ in range(config.convs_per_stage):
                layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.GroupNorm(4, c), nn.ReLU()]
                c_in = c
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c_in, config.feat_dim)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.feat_dim, config.num_classes)

    def init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.GroupNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def embed(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        """Penultimate features (B, F) of images in [-1, 1], any float dtype."""
        return F.relu(self.fc(self.features(to_weight_dtype(x_BCHW, self)).mean(dim=(2, 3))))

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        """Logits (B, K) of images (B, C, H, W) in [-1, 1] (the training data range)."""
        return self.head(self.dropout(self.embed(x_BCHW)))


def build_classifier(model: dict[str, Any] | None = None) -> Classifier:
    """Classifier from {"preset": name, <field overrides>} (default preset "fmnist"), initialised."""
    spec = dict(model or {})
    preset = spec.pop("preset", "fmnist")
    if preset not in PRESETS:
        raise ValueError(f"unknown classifier preset {preset!r}; choose one of {sorted(PRESETS)}")
    base = dataclasses.asdict(PRESETS[preset])
    net = Classifier(from_dict(ClassifierConfig, {**base, **spec}))
    net.init_weights()
    return net
