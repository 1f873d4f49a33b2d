"""Training compute of the ImageNet 256 recipes from argen's FLOPs accounting (argen.models.flops).

Training FLOPs = 3 x forward FLOPs per image (forward + backward, the usual 1 + 2) x images seen; GPU-hours
at a stated model FLOPs utilisation (MFU) of the bf16 dense peak. VAR from images adds the frozen VQVAE's
encoder forward per image (measured by torch's FLOP counter on one 256 x 256 image).

Usage: python scripts/imagenet_compute.py [--mfu 0.4]   (prints a Markdown table)
"""

from __future__ import annotations

import argparse

import torch

IMAGENET_TRAIN = 1_281_167
PEAK_BF16 = {"A100": 312e12, "H100 SXM": 989e12}  # dense bf16 tensor-core peaks (vendor data sheets)


def rows() -> list[tuple[str, int, int, float]]:
    """(run, epochs, batch (0: not a training run), FLOPs per image and epoch) of each recipe."""
    from argen.models.flops import gpt_forward_flops, measured_flops, var_sampling_flops
    from argen.models.gpt import gpt_config
    from argen.models.var import var_config
    from argen.tokenizers.multiscale import MultiScaleVQVAE, msvq_config
    from argen.tokenizers.vqgan import VQModel, vq_config

    ear = gpt_forward_flops(gpt_config("ear_B", vocab_size=16384), 256)  # two streams of 257 slots
    var = var_sampling_flops(var_config("d16"), 1, cfg=False, adaln_per_scale=False)["total"]
    vae = MultiScaleVQVAE(msvq_config("var_vae_ch160v4096z32")).eval()
    encode = measured_flops(vae.encode_latent, torch.zeros(1, 3, 256, 256))
    vq16 = measured_flops(VQModel(vq_config("llamagen_vq16")).eval().encode, torch.zeros(1, 3, 256, 256))
    return [
        ("argen tokenize, ten crops (LlamaGen VQ-16 encoder)", 1, 0, 10 * vq16),
        ("EAR-B, ten-crop token store (LlamaGen VQ-16)", 300, 256, 3 * ear),
        ("VAR-d16, token store", 200, 768, 3 * var),
        ("VAR-d16, from images (VQVAE encoder on the fly)", 200, 768, 3 * var + encode),
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mfu", type=float, default=0.4, help="assumed model FLOPs utilisation")
    a = p.parse_args()
    gpus = list(PEAK_BF16)
    print(
        "| run | epochs | batch | steps | GFLOPs / image / epoch | total FLOPs | "
        + " | ".join(f"{g} GPU-hours" for g in gpus)
        + " |"
    )
    print("|---" * (6 + len(gpus)) + "|")
    for name, epochs, batch, per_image in rows():
        images = epochs * IMAGENET_TRAIN
        total = per_image * images
        hours = [total / (PEAK_BF16[g] * a.mfu) / 3600 for g in gpus]
        print(
            f"| {name} | {epochs} | {batch or '-'} | {f'{images // batch:,}' if batch else '-'} | "
            f"{per_image / 1e9:.0f} | {total:.2e} | " + " | ".join(f"{h:,.0f}" for h in hours) + " |"
        )


if __name__ == "__main__":
    main()
