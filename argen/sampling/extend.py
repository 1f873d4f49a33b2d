"""EAR image extension and centre-conditioned inpainting: keep the K x K centre tokens of images and let an
EAR model generate the rest of the spiral on a G x G token canvas (pictures and reports: `argen.apps.extend`).

Shape legend: B images, C channels, K centre crop side in tokens, n model grid, G canvas side in tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from argen.orders import build_order
from argen.sampling.ar import GenerationProcess, extend_from_centre
from argen.sampling.logits import SamplingConfig


@dataclass
class Extension:
    """images_BCHW: decoded canvases in [0, 1] (float32, CPU). box: top-left (row, col) of the kept centre in
    the model's grid. passes: forward passes that ran."""

    images_BCHW: torch.Tensor
    box: tuple[int, int]
    passes: int


def centre_box(order: Any, k: int) -> tuple[int, int]:
    """Top-left cell of the K x K square that the first K*K cells of `order` (a spiral) cover."""
    return int(order.rows_L[: k * k].min()), int(order.cols_L[: k * k].min())


def extension_canvas(model: nn.Module, centre: int, canvas: int | None) -> int:
    """The canvas side G (None = the model's grid: inpainting), after checking that `model` can run it."""
    if getattr(model.config, "order", None) != "spiral":
        raise ValueError("extension needs an EAR (spiral-order) model such as ear_fmnist")
    n = model.config.grid
    canvas = canvas or n
    if not centre <= n <= canvas:
        raise ValueError(f"need kept centre ({centre}) <= model grid ({n}) <= canvas ({canvas}), in tokens")
    if centre == canvas:
        raise ValueError(
            f"the kept centre ({centre} tokens) fills the whole canvas ({canvas}): nothing is left to "
            "generate; keep a smaller centre or take a larger canvas"
        )
    return canvas


@torch.no_grad()
def extend_images_from_centre(
    model: nn.Module,
    tokenizer: nn.Module,
    img_BCHW: torch.Tensor,
    labels_B: torch.Tensor,
    centre: int,
    canvas: int | None,
    sampling: SamplingConfig,
) -> Extension:
    """Encode images (B, C, H, W) in [-1, 1], keep their K x K centre tokens, generate the rest of a G x G
    spiral canvas for classes `labels_B` and decode it."""
    canvas = extension_canvas(model, centre, canvas)
    codes = tokenizer.encode(img_BCHW)
    r0, c0 = centre_box(build_order("spiral", model.config.grid), centre)
    process = GenerationProcess.for_model(model, sampling, order="spiral", grid=canvas)
    res = extend_from_centre(model, labels_B, codes[:, r0 : r0 + centre, c0 : c0 + centre], process)
    generated = tokenizer.decode_codes(res.tokens_BL.view(-1, canvas, canvas)).add(1).div(2)
    return Extension(generated.float().cpu(), (r0, c0), res.passes)
