"""Image output: PNG grids, labelled strips and animated GIFs. Images are (B, C, H, W) floats in [0, 1]."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from argen.io import atomic_write


def to_uint8(img_BCHW: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) float in [0, 1] -> (B, H, W, C) uint8 (grey images keep one channel)."""
    x = img_BCHW.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu()
    return x.permute(0, 2, 3, 1).numpy()


def make_grid(img_BCHW: torch.Tensor, nrow: int | None = None, pad: int = 2, scale: int = 1) -> Image.Image:
    """Tile a batch into one image, `nrow` images per row, upscaled by `scale` (nearest)."""
    arr = to_uint8(img_BCHW)
    b, h, w, c = arr.shape
    nrow = nrow or math.ceil(math.sqrt(b))
    ncol = math.ceil(b / nrow)
    canvas = np.full((ncol * (h + pad) + pad, nrow * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i in range(b):
        r, col = divmod(i, nrow)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        canvas[y : y + h, x : x + w] = arr[i]
    im = Image.fromarray(canvas[..., 0] if c == 1 else canvas)
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    return im


def save_grid(img_BCHW: torch.Tensor, path: str | Path, nrow: int | None = None, scale: int = 1) -> Path:
    grid = make_grid(img_BCHW, nrow=nrow, scale=scale)
    return atomic_write(path, lambda p: grid.save(p, format="PNG"))


def save_gif(
    frames: Sequence[torch.Tensor],
    path: str | Path,
    nrow: int | None = None,
    scale: int = 1,
    duration_ms: int = 120,
    hold_last_ms: int = 1200,
) -> Path:
    """Animated GIF from a list of (B, C, H, W) batches, each frame a grid."""
    ims = [make_grid(f, nrow=nrow, scale=scale).convert("P") for f in frames]
    durations = [duration_ms] * (len(ims) - 1) + [hold_last_ms]
    return atomic_write(
        path,
        lambda p: ims[0].save(
            p, format="GIF", save_all=True, append_images=ims[1:], duration=durations, loop=0
        ),
    )


def save_strip(frames: Sequence[torch.Tensor], path: str | Path, rows: int = 4, scale: int = 1) -> Path:
    """One row per image (the first `rows`), one column per frame: VAR's coarse-to-fine progression."""
    per_image = torch.stack(list(frames), dim=1)[:rows]  # (B, S, C, H, W)
    return save_grid(per_image.flatten(0, 1), path, nrow=len(frames), scale=scale)
