"""Class accuracy of generated samples and a non-standard "domain" feature space, from argen's classifier
(`argen.models.classifier`; `build_classifier`, `PRESETS` are re-exported here for existing callers).

Shape legend: B batch, C channels, H/W pixels, F penultimate feature dim, K classes.

Trained on the real Fashion-MNIST training set (task "classifier" in argen.training.objectives). Class
accuracy of samples and FID in its penultimate features are argen's own, NON-STANDARD metrics: they are
named as such in every report and are not comparable with published numbers.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from argen.models.checkpoints import load_model, model_files
from argen.models.classifier import PRESETS as PRESETS
from argen.models.classifier import Classifier, ClassifierConfig
from argen.models.classifier import build_classifier as build_classifier

ASSET = Path(__file__).resolve().parent.parent / "assets" / "classifier_fmnist"


def load_default_classifier(path: str | Path | None = None, device: torch.device | str = "cpu") -> Classifier:
    """The shipped Fashion-MNIST classifier (argen/assets/classifier_fmnist) or an argen file at `path`."""
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
