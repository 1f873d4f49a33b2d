"""A small CNN classifier for class accuracy of generated samples and a non-standard "domain" feature space.

Shape legend: B batch, C channels, H/W pixels, F penultimate feature dim, K classes.

Trained on the real Fashion-MNIST training set (task "classifier" in argen.training.objectives). Class
accuracy of samples and FID in its penultimate features are argen's own, NON-STANDARD metrics: they are
named as such in every report and are not comparable with published numbers.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from argen.config import from_dict
from argen.models.checkpoints import register

ASSET = Path(__file__).resolve().parent.parent / "assets" / "classifier_fmnist"


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
        """Penultimate features (B, F) of images in [-1, 1]."""
        return F.relu(self.fc(self.features(x_BCHW).mean(dim=(2, 3))))

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


def load_default_classifier(path: str | Path | None = None, device: torch.device | str = "cpu") -> Classifier:
    """The shipped Fashion-MNIST classifier (argen/assets/classifier_fmnist) or an argen file at `path`."""
    from argen.models.checkpoints import load_model, model_files

    path = Path(path) if path is not None else ASSET
    if not model_files(path)[0].is_file():
        raise FileNotFoundError(
            f"classifier file {path} not found; train one with scripts/train_classifier.py"
        )
    model = load_model(path, device=device)
    if not isinstance(model, Classifier):
        raise ValueError(f"{path} holds a {type(model).__name__}, not a classifier")
    return model


def to_classifier_input(images_u8_NCHW: torch.Tensor, config: ClassifierConfig) -> torch.Tensor:
    """uint8 images -> float in [-1, 1] with the classifier's channel count and size."""
    x = images_u8_NCHW.float() / 127.5 - 1
    if x.shape[1] != config.in_channels:
        if config.in_channels == 1:
            x = x.mean(1, keepdim=True)
        elif x.shape[1] == 1:
            x = x.expand(-1, config.in_channels, -1, -1)
        else:
            raise ValueError(f"cannot map {x.shape[1]} image channels to {config.in_channels}")
    if x.shape[-1] != config.image_size or x.shape[-2] != config.image_size:
        x = F.interpolate(x, size=(config.image_size,) * 2, mode="bilinear", align_corners=False)
    return x


@torch.inference_mode()
def predict(classifier: Classifier, images_u8_NCHW: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Predicted labels (N,) for uint8 images (N, C, H, W)."""
    dev = next(classifier.parameters()).device
    out = [
        classifier(to_classifier_input(images_u8_NCHW[i : i + batch_size].to(dev), classifier.config))
        .argmax(-1)
        .cpu()
        for i in range(0, len(images_u8_NCHW), batch_size)
    ]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def class_accuracy(
    classifier: Classifier, images_u8_NCHW: torch.Tensor, labels_N: torch.Tensor, batch_size: int = 500
) -> float:
    """Fraction of images the classifier assigns to their intended class (non-standard metric).

    Args:
        images_u8_NCHW: uint8 (N, C, H, W) images (generated or real). labels_N: (N,) intended classes.
    """
    if len(images_u8_NCHW) != len(labels_N) or len(labels_N) == 0:
        raise ValueError(f"need as many labels as images (got {len(labels_N)} and {len(images_u8_NCHW)})")
    was_training = classifier.training
    classifier.eval()
    pred = predict(classifier, images_u8_NCHW, batch_size)
    classifier.train(was_training)
    return float((pred == labels_N.cpu().long()).float().mean())


class ClassifierExtractor:
    """Non-standard "domain" feature space: the classifier's penultimate features, uint8 images -> (N, F).

    The name carries a digest of the weights so cached reference statistics never mix two classifiers.
    """

    def __init__(self, classifier: Classifier, batch_size: int = 500, tag: str = "fmnist"):
        self.model = classifier.eval()
        self.batch_size = batch_size
        digest = hashlib.sha1()
        for k, v in sorted(classifier.state_dict().items()):
            digest.update(k.encode())
            digest.update(v.detach().float().cpu().numpy().tobytes())
        self.name = f"classifier-{tag}-{digest.hexdigest()[:8]}-penultimate-NONSTANDARD"

    @torch.inference_mode()
    def __call__(self, images_u8_NCHW: torch.Tensor) -> np.ndarray:
        dev = next(self.model.parameters()).device
        out = [
            self.model.embed(
                to_classifier_input(images_u8_NCHW[i : i + self.batch_size].to(dev), self.model.config)
            )
            .float()
            .cpu()
            .numpy()
            for i in range(0, len(images_u8_NCHW), self.batch_size)
        ]
        return np.concatenate(out) if out else np.zeros((0, self.model.config.feat_dim), np.float32)
