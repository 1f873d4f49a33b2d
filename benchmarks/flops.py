"""Analytic FLOPs tables: sampling cost per image (CFG on) and the ImageNet 256 recipes' training compute.

Two parts, each a markdown table (in the result as a string, and printed to stderr) plus its rows:
* `sampling`: per-image sampling cost of official-size and Fashion-MNIST models from argen.models.flops
  (matmul FLOPs, 2 per multiply-add; VAR with AdaLN computed once per sample, as argen's sampler does);
  the table of docs/05-benchmarks-results.md ("Analytic sampling cost per image").
* `imagenet`: training FLOPs = 3 x forward FLOPs per image (forward + backward, the usual 1 + 2) x images
  seen, and GPU-hours at `--mfu` of the bf16 dense peak; VAR from images adds the frozen VQVAE's encoder
  forward per image (torch's FLOP counter on one 256 x 256 image); the table of docs/02-training.md.
Nothing is timed: the numbers depend on the code only.

    python -m benchmarks flops
    python -m benchmarks flops --parts imagenet --mfu 0.5
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import torch

SMOKE: list[str] = []  # the whole thing takes seconds (the imagenet part builds two 256 px encoders)

IMAGENET_TRAIN = 1_281_167
PEAK_BF16 = {"A100": 312e12, "H100 SXM": 989e12}  # dense bf16 tensor-core peaks (vendor data sheets)
PARTS = ("sampling", "imagenet")


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    p.add_argument("--mfu", type=float, default=0.4, help="imagenet: assumed model FLOPs utilisation")


def _gpt_row(name: str, preset: str, schedule: object = None) -> dict[str, Any]:
    from argen.models.flops import gpt_sampling_flops
    from argen.models.gpt import gpt_config
    from argen.orders import build_order

    cfg = gpt_config(preset)
    order = build_order(cfg.order, cfg.grid, cfg.schedule if schedule is None else schedule)
    out = gpt_sampling_flops(cfg, order)
    return {"model": name, "passes": out["passes"], "tokens": out["tokens"], "gflops": out["flops"] / 1e9}


def _var_row(name: str, preset: str, sparse: bool) -> dict[str, Any]:
    from argen.models.actvar import actvar_config
    from argen.models.flops import actvar_sampling_flops, var_sampling_flops
    from argen.models.var import var_config

    cfg = var_config(preset)
    if sparse:
        total = actvar_sampling_flops(actvar_config(preset), adaln_per_scale=False)["total"]
    else:
        total = var_sampling_flops(cfg, adaln_per_scale=False)["total"]
    return {"model": name, "passes": len(cfg.patch_nums), "tokens": 2 * cfg.seq_len, "gflops": total / 1e9}


def sampling() -> dict[str, Any]:
    rows = [
        _gpt_row("LlamaGen-B raster", "B"),
        _gpt_row("EAR-B (sides)", "ear_B"),
        _gpt_row("LlamaGen-L raster", "L"),
        _gpt_row("EAR-L (sides)", "ear_L"),
        _var_row("VAR-d16", "d16", False),
        _var_row("ActVAR-d16 (preset budget)", "d16", True),
        _var_row("VAR-d30", "d30", False),
        _var_row("ActVAR-d30 (preset budget)", "d30", True),
        _gpt_row("fmnist raster (fmnist_raster_s)", "fmnist_raster_s"),
        _gpt_row("fmnist EAR (fmnist_s, sides)", "fmnist_s"),
        _gpt_row("fmnist EAR, 16 passes", "fmnist_s", 16),
        _gpt_row("fmnist EAR, 8 passes", "fmnist_s", 8),
        _var_row("fmnist VAR", "fmnist", False),
        _var_row("fmnist ActVAR (preset budget)", "fmnist", True),
    ]
    lines = ["| model | passes | tokens processed | GFLOPs / image |", "|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['passes']} | {r['tokens']} | {r['gflops']:.1f} |" for r in rows]
    return {"rows": rows, "markdown": "\n".join(lines) + "\n"}


def imagenet_recipes() -> list[dict[str, Any]]:
    """Each recipe's run, epochs, batch (0: not a training run) and training FLOPs per image and epoch."""
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
    recipes = [
        ("argen tokenize, ten crops (LlamaGen VQ-16 encoder)", 1, 0, 10 * vq16),
        ("EAR-B, ten-crop token store (LlamaGen VQ-16)", 300, 256, 3 * ear),
        ("VAR-d16, token store", 200, 768, 3 * var),
        ("VAR-d16, from images (VQVAE encoder on the fly)", 200, 768, 3 * var + encode),
    ]
    return [dict(zip(("run", "epochs", "batch", "flops_per_image"), r, strict=True)) for r in recipes]


def imagenet(mfu: float) -> dict[str, Any]:
    gpus = list(PEAK_BF16)
    rows = []
    for recipe in imagenet_recipes():
        images = recipe["epochs"] * IMAGENET_TRAIN
        total = recipe["flops_per_image"] * images
        hours = {g: total / (PEAK_BF16[g] * mfu) / 3600 for g in gpus}
        steps = images // recipe["batch"] if recipe["batch"] else None
        rows.append({**recipe, "steps": steps, "total_flops": total, "gpu_hours": hours})
    lines = [
        "| run | epochs | batch | steps | GFLOPs / image / epoch | total FLOPs | "
        + " | ".join(f"{g} GPU-hours" for g in gpus)
        + " |",
        "|---" * (6 + len(gpus)) + "|",
    ]
    for r in rows:
        steps = f"{r['steps']:,}" if r["steps"] else "-"
        hours = " | ".join(f"{h:,.0f}" for h in r["gpu_hours"].values())
        lines.append(
            f"| {r['run']} | {r['epochs']} | {r['batch'] or '-'} | {steps} | "
            f"{r['flops_per_image'] / 1e9:.0f} | {r['total_flops']:.2e} | {hours} |"
        )
    return {"mfu": mfu, "peak_bf16_flops_per_s": PEAK_BF16, "rows": rows, "markdown": "\n".join(lines) + "\n"}


def run(args: argparse.Namespace) -> dict[str, Any]:
    parts = args.parts.split(",")
    if unknown := sorted(set(parts) - set(PARTS)):
        raise SystemExit(f"flops: no part {unknown}; there are: {', '.join(PARTS)}")
    result: dict[str, Any] = {}
    if "sampling" in parts:
        result["sampling"] = sampling()
    if "imagenet" in parts:
        result["imagenet"] = imagenet(args.mfu)
    for part in result.values():
        print(part["markdown"], file=sys.stderr)
    return result


def check(result: dict[str, Any]) -> None:
    rows = {r["model"]: r for r in result["sampling"]["rows"]}
    # the figures docs/05-benchmarks-results.md and the README quote
    assert (
        f"{rows['VAR-d16']['gflops']:.1f}" == "597.1" and f"{rows['EAR-B (sides)']['gflops']:.1f}" == "185.5"
    )
    assert rows["fmnist EAR (fmnist_s, sides)"]["passes"] == 31 and rows["VAR-d16"]["tokens"] == 1360
    assert rows["ActVAR-d16 (preset budget)"]["gflops"] < rows["VAR-d16"]["gflops"]
    tokenize, ear = result["imagenet"]["rows"][:2]
    assert round(tokenize["flops_per_image"] / 1e9) == 1384 and ear["steps"] == 1_501_367
    line = (
        "| VAR-d16, token store | 200 | 768 | 333,637 | 896 | 2.30e+20 | 511 | 161 |"  # docs/02-training.md
    )
    assert line in result["imagenet"]["markdown"].splitlines()
