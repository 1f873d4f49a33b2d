"""`argen extend`: EAR image extension and centre-conditioned inpainting of Fashion-MNIST test images, as a
picture (original | kept centre | generated) and a JSON report. The sampling is `argen.sampling.extend`.

Shape legend: B images, K centre crop side in tokens, n model grid, G canvas side in tokens.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from argen.config import DataConfig
from argen.data import build_image_dataset
from argen.io import atomic_write_text
from argen.sampling.extend import extend_images_from_centre, extension_canvas
from argen.sampling.images import save_grid
from argen.sampling.pipeline import Pipeline
from argen.sampling.requests import ExtendRequest


def extend_images(request: ExtendRequest, out: Path, pipe: Any = None) -> dict[str, Any]:
    """Run extension/inpainting and write `extend.png` (rows: original | kept centre | generated).

    pipe: the `Pipeline` of request.generate, already loaded (the app keeps its models loaded); None loads it.
    """
    pipe = pipe or Pipeline.load(request.generate)
    canvas = extension_canvas(pipe.model, request.centre, request.canvas)
    data = build_image_dataset(DataConfig(split="test"))
    indices = request.images
    bad = [i for i in indices if not 0 <= i < len(data)]
    if bad:
        raise ValueError(f"--images {bad}: the Fashion-MNIST test split has images 0..{len(data) - 1}")
    device = next(pipe.model.parameters()).device
    img_BCHW = torch.stack([data[i][0] for i in indices]).to(device)
    labels_B = torch.tensor(request.classes or [data[i][1] for i in indices], device=device)
    labels_B = pipe.check_labels(labels_B).to(device)
    ext = extend_images_from_centre(
        pipe.model, pipe.require_tokenizer(), img_BCHW, labels_B, request.centre, canvas, pipe.sampling
    )
    generated, n = ext.images_BCHW, pipe.model.config.grid
    size = generated.shape[-1]
    orig_px = img_BCHW.add(1).div(2).float().cpu()
    kept = _pad_to(_keep_box(orig_px, n, ext.box, request.centre), size)
    panel = torch.stack([_pad_to(orig_px, size), kept, generated], dim=1).flatten(0, 1)
    path = save_grid(panel, out / "extend.png", nrow=3, scale=3)
    report = {
        "image": str(path),
        "canvas_tokens": canvas,
        "centre_tokens": request.centre,
        "mode": "extension" if canvas > n else "inpainting",
        "passes": ext.passes,
        "dtype": pipe.dtype,
    }
    atomic_write_text(out / "extend.json", json.dumps(report, indent=2) + "\n")
    return report


def _keep_box(img_BCHW: torch.Tensor, grid: int, box: tuple[int, int], k: int) -> torch.Tensor:
    """Grey out everything but the pixels under the kept K x K tokens at `box` (for display)."""
    per_token = img_BCHW.shape[-1] // grid
    (r0, c0), keep = box, torch.zeros_like(img_BCHW)
    keep[..., r0 * per_token : (r0 + k) * per_token, c0 * per_token : (c0 + k) * per_token] = 1
    return img_BCHW * keep + 0.5 * (1 - keep)


def _pad_to(img_BCHW: torch.Tensor, size: int) -> torch.Tensor:
    pad = size - img_BCHW.shape[-1]
    return F.pad(img_BCHW, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2), value=0.5)
