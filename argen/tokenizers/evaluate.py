"""Reconstruction quality of a tokenizer: PSNR on [0, 1] images, codebook usage and perplexity."""

from __future__ import annotations

from pathlib import Path
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


@torch.no_grad()
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
    loader = data if isinstance(data, DataLoader) else DataLoader(data, batch_size=batch_size, shuffle=False)
    model.eval()
    param = next(model.parameters())
    vocab = model.config.vocab_size
    counts_V = torch.zeros(vocab, dtype=torch.long)
    psnr_sum, n = 0.0, 0
    bar = tqdm(total=max_images, desc="reconstruct", unit="img", disable=not progress)
    for batch in loader:
        img = batch[0] if isinstance(batch, list | tuple) else batch
        img = img[: max_images - n].to(param.device, param.dtype)
        rec, idx = _codes(model, img)
        mse_B = ((rec.clamp(-1, 1) - img.clamp(-1, 1)) / 2).square().flatten(1).mean(1).float()
        psnr_sum += (-10 * torch.log10(mse_B.clamp_min(1e-10))).sum().item()
        counts_V += torch.bincount(idx.reshape(-1).cpu(), minlength=vocab)
        n += len(img)
        bar.update(len(img))
        if n >= max_images:
            break
    bar.close()
    if n == 0:
        raise ValueError("no images to evaluate: the dataset is empty or max_images is 0")
    usage, perplexity = usage_from_counts(counts_V)
    return {"psnr": psnr_sum / n, "usage": usage.item(), "perplexity": perplexity.item(), "n": n}


def reconstruction_report(
    tokenizer_path: str | Path, out: str | Path, max_images: int = 2000, split: str = "test", show: int = 10
) -> dict[str, Any]:
    """`argen reconstruct`: metrics of a tokenizer file on Fashion-MNIST plus `reconstructions.png`
    (top row originals, bottom row reconstructions)."""
    from argen.config import DataConfig
    from argen.data import build_image_dataset
    from argen.models.checkpoints import load_model
    from argen.sampling.images import save_grid

    model = load_model(tokenizer_path, expect=("vq", "msvq"))
    data = build_image_dataset(DataConfig(split=split))
    metrics = reconstruction_metrics(model, data, max_images=max_images)
    img_BCHW = torch.stack([data[i][0] for i in range(show)])
    rec_BCHW, _ = _codes(model, img_BCHW)
    grid = save_grid(
        torch.cat([img_BCHW, rec_BCHW.clamp(-1, 1)]).add(1).div(2),
        Path(out) / "reconstructions.png",
        nrow=show,
        scale=3,
    )
    return {"tokenizer": str(tokenizer_path), "split": split, "image": str(grid), **metrics}
