"""`argen reconstruct`: a tokenizer's reconstructions of Fashion-MNIST, scored like generator samples.

The first `n` images of a split are encoded and decoded. PSNR, codebook usage and perplexity measure the
reconstruction; the reconstructions then go through `argen eval`'s `evaluate` with the images' true labels
(same features, cached reference statistics, real-vs-real floor, KID, precision/recall and class accuracy),
so the rFID of a tokenizer and the FID of a generator at the same `n` are comparable: the rFID is the
generator's ceiling. `reconstructions.png` shows originals (top row) over their reconstructions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from argen.config import DataConfig
from argen.data import build_image_dataset
from argen.device import dtype_name, resolve_dtype
from argen.eval.evaluate import EvalConfig, evaluate
from argen.eval.inception import to_uint8
from argen.io import atomic_write_text
from argen.models.checkpoints import load_model
from argen.sampling.images import save_grid
from argen.tokenizers.evaluate import ReconstructionTally, iter_reconstructions


@dataclass
class ReconstructConfig:
    """tokenizer: vq or msvq model (file, folder or shipped name). n: first n images of Fashion-MNIST `split`.
    out: folder of `reconstructions.png`; `show` images in it. fid: score the reconstructions with `scoring`
    (Inception features run at a few images per second on a CPU; False = PSNR, usage and perplexity only).
    scoring: `argen eval`'s settings (features, reference, floor, device; `scoring.out` = JSON report path).
    dtype: the tokenizer's dtype, "auto" (bf16 where the device has bf16 units), "bf16" or "fp32"; the
        Inception scoring stays fp32.
    """

    tokenizer: str
    n: int = 1000
    split: str = "test"
    out: str = "out/reconstruct"
    show: int = 10
    fid: bool = True
    batch_size: int = 64
    scoring: EvalConfig = field(default_factory=EvalConfig)
    dtype: str = "auto"

    def __post_init__(self) -> None:
        resolve_dtype(self.dtype)  # a bad name fails here, before any work
        if self.n < 1 or self.show < 0:
            raise ValueError(f"n must be >= 1 and show >= 0, got n={self.n}, show={self.show}")


def reconstruction_report(cfg: ReconstructConfig) -> dict[str, Any]:
    """Reconstruct, measure, draw and (with `cfg.fid`) score; returns the JSON report, also written to
    `cfg.scoring.out` when that is set.

    Returns:
        {"tokenizer", "split", "image", "psnr", "usage", "perplexity", "n"} and, with `cfg.fid`, every key
        of `argen eval`'s report ("fid", "kid_mean", "class_accuracy", "floor", "reference", ...) computed
        on the reconstructions.
    """
    model = load_model(cfg.tokenizer, device=cfg.scoring.device, expect=("vq", "msvq"))
    model = model.to(resolve_dtype(cfg.dtype, next(model.parameters()).device))
    data = build_image_dataset(DataConfig(split=cfg.split))
    tally = ReconstructionTally(model.config.vocab_size)
    recs, labels, originals = [], [], []
    progress = cfg.scoring.progress
    for img, rec, idx, label in iter_reconstructions(model, data, cfg.n, cfg.batch_size, progress):
        tally.add(img, rec, idx)
        recs.append(to_uint8(rec.clamp(-1, 1).add(1).div(2).float().cpu()))
        labels.append(label)
        if sum(map(len, originals)) < cfg.show:
            originals.append(img.add(1).div(2).float().cpu())
    dtype = dtype_name(next(model.parameters()).dtype)
    recs_u8 = torch.cat(recs)
    report = {"tokenizer": str(cfg.tokenizer), "split": cfg.split, "dtype": dtype, **tally.metrics()}
    if cfg.show:
        show = min(cfg.show, len(recs_u8))
        grid = torch.cat([torch.cat(originals)[:show], recs_u8[:show].float() / 255])
        report["image"] = str(save_grid(grid, Path(cfg.out) / "reconstructions.png", nrow=show, scale=3))
    if cfg.fid:
        scored = f"reconstructions of the first {report['n']} Fashion-MNIST {cfg.split} images"
        report = evaluate(cfg.scoring, recs_u8, torch.cat(labels), {**report, "scored": scored})
    elif cfg.scoring.out is not None:
        atomic_write_text(cfg.scoring.out, json.dumps(report, indent=2) + "\n")
    return report
