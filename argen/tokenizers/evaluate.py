"""Reconstruction quality of a tokenizer: PSNR on [0, 1] images, codebook usage and perplexity."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from argen.tokenizers.quantizer import usage_from_counts


def _codes(model: nn.Module, img_BCHW: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(reconstruction in [-1, 1], all codes flattened) for a VQModel or a MultiScaleVQVAE."""
    if hasattr(model, "img_to_idxBl"):
        idx_Bl = model.img_to_idxBl(img_BCHW)
        return model.idxBl_to_img(idx_Bl), torch.cat(idx_Bl, dim=1)
    idx_Bhw = model.encode(img_BCHW)
    return model.decode_codes(idx_Bhw), idx_Bhw.flatten(1)


class ReconstructionTally:
    """Running PSNR sum and code histogram over reconstructed batches; `metrics()` summarises them."""

    def __init__(self, vocab_size: int):
        self.counts_V = torch.zeros(vocab_size, dtype=torch.long)
        self.psnr_sum, self.n = 0.0, 0

    def add(self, img_BCHW: torch.Tensor, rec_BCHW: torch.Tensor, idx_BL: torch.Tensor) -> None:
        mse_B = ((rec_BCHW.clamp(-1, 1) - img_BCHW.clamp(-1, 1)) / 2).square().flatten(1).mean(1).float()
        self.psnr_sum += (-10 * torch.log10(mse_B.clamp_min(1e-10))).sum().item()
        self.counts_V += torch.bincount(idx_BL.reshape(-1).cpu(), minlength=len(self.counts_V))
        self.n += len(img_BCHW)

    def metrics(self) -> dict[str, Any]:
        if self.n == 0:
            raise ValueError("no images to evaluate: the dataset is empty or max_images is 0")
        usage, perplexity = usage_from_counts(self.counts_V)
        return {
            "psnr": self.psnr_sum / self.n,
            "usage": usage.item(),
            "perplexity": perplexity.item(),
            "n": self.n,
        }


@torch.no_grad()
def iter_reconstructions(
    model: nn.Module,
    data: DataLoader | Dataset,
    max_images: int = 10_000,
    batch_size: int = 64,
    progress: bool = True,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """Encode-decode the first `max_images` images batch by batch (model put in eval mode here).

    Args:
        model: a VQModel or MultiScaleVQVAE.
        data: a DataLoader or a dataset of (image (C, H, W) in [-1, 1], label) items.

    Yields:
        (images (B, C, H, W), reconstructions (B, C, H, W) unclamped, codes (B, L), labels (B,) or None),
        images and reconstructions on the model's device and dtype.
    """
    loader = data if isinstance(data, DataLoader) else DataLoader(data, batch_size=batch_size, shuffle=False)
    model.eval()
    param = next(model.parameters())
    n = 0
    bar = tqdm(total=max_images, desc="reconstruct", unit="img", disable=not progress)
    for batch in loader:
        img, *rest = batch if isinstance(batch, list | tuple) else (batch,)
        labels = rest[0] if rest else None
        img = img[: max_images - n].to(param.device, param.dtype)
        if len(img) == 0:
            break
        rec, idx = _codes(model, img)
        yield img, rec, idx, (labels[: len(img)] if labels is not None else None)
        n += len(img)
        bar.update(len(img))
        if n >= max_images:
            break
    bar.close()


def reconstruction_metrics(
    model: nn.Module,
    data: DataLoader | Dataset,
    max_images: int = 10_000,
    batch_size: int = 64,
    progress: bool = True,
) -> dict[str, Any]:
    """Encode-decode up to `max_images` images and measure the reconstruction.

    Args:
        model: a VQModel or MultiScaleVQVAE (put in eval mode here).
        data: a DataLoader or a dataset of (image (C, H, W) in [-1, 1], label) items.

    Returns:
        {"psnr": mean per-image PSNR in dB on [0, 1] images, "usage": fraction of the codebook used over all
        images, "perplexity": of the code histogram, "n": images evaluated}.
    """
    tally = ReconstructionTally(model.config.vocab_size)
    for img, rec, idx, _ in iter_reconstructions(model, data, max_images, batch_size, progress):
        tally.add(img, rec, idx)
    return tally.metrics()
