"""`argen extend`: EAR image extension and centre-conditioned inpainting of Fashion-MNIST test images, as a
picture (original | kept centre | generated) and a JSON report. The sampling is `argen.sampling.extend`.

Shape legend: B images, K centre crop side in tokens, n model grid, G canvas side in tokens.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from argen.config import DataConfig
from argen.data import build_image_dataset
from argen.io import atomic_write_text
from argen.sampling.extend import extend_images_from_centre, extension_canvas
from argen.sampling.images import save_grid
from argen.sampling.logits import SamplingConfig
from argen.sampling.pipeline import GenerateConfig, Pipeline


@dataclass
class ExtendConfig:
    """Keep the K x K centre tokens of real images and let an EAR model generate the rest of the spiral.

    canvas: G, the canvas side in tokens; None or the model's grid = inpainting of the border; larger =
        extension beyond the training canvas (needs a model with rope_mode "grid").
    images: Fashion-MNIST test-set indices to start from. classes: class per image (None = their labels).
    """

    model: str = ""
    tokenizer: str = ""
    centre: int = 8
    canvas: int | None = None
    images: list[int] | None = None
    classes: list[int] | None = None
    cfg_scale: float = 2.0
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.centre < 1:
            raise ValueError(f"centre must be >= 1 token, got {self.centre}")
        if self.classes is not None and self.images is not None and len(self.classes) != len(self.images):
            raise ValueError("give one class per image (--classes) or none")


def extend_images(cfg: ExtendConfig, out: Path, pipe: Any = None) -> dict[str, Any]:
    """Run extension/inpainting and write `extend.png` (rows: original | kept centre | generated).

    pipe: an already loaded `Pipeline` of cfg.model and cfg.tokenizer (the app keeps its models loaded);
    None loads them.
    """
    pipe = pipe or Pipeline.load(GenerateConfig(model=cfg.model, tokenizer=cfg.tokenizer, device=cfg.device))
    canvas = extension_canvas(pipe.model, cfg.centre, cfg.canvas)
    data = build_image_dataset(DataConfig(split="test"))
    indices = cfg.images or [0, 1, 2, 3]
    bad = [i for i in indices if not 0 <= i < len(data)]
    if bad:
        raise ValueError(f"--images {bad}: the Fashion-MNIST test split has images 0..{len(data) - 1}")
    device = next(pipe.model.parameters()).device
    img_BCHW = torch.stack([data[i][0] for i in indices]).to(device)
    labels_B = torch.tensor(cfg.classes or [data[i][1] for i in indices], device=device)
    labels_B = pipe.check_labels(labels_B).to(device)
    sampling = SamplingConfig(cfg_scale=cfg.cfg_scale, seed=cfg.seed)
    ext = extend_images_from_centre(
        pipe.model, pipe.require_tokenizer(), img_BCHW, labels_B, cfg.centre, canvas, sampling
    )
    generated, n = ext.images_BCHW, pipe.model.config.grid
    size = generated.shape[-1]
    orig_px = img_BCHW.add(1).div(2).float().cpu()
    kept = _pad_to(_keep_box(orig_px, n, ext.box, cfg.centre), size)
    panel = torch.stack([_pad_to(orig_px, size), kept, generated], dim=1).flatten(0, 1)
    path = save_grid(panel, out / "extend.png", nrow=3, scale=3)
    report = {
        "image": str(path),
        "canvas_tokens": canvas,
        "centre_tokens": cfg.centre,
        "mode": "extension" if canvas > n else "inpainting",
        "passes": ext.passes,
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
