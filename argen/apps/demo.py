"""`argen demo`: the whole pipeline, small, on a CPU, written to one folder with a summary JSON.

Uses the models shipped in `argen/assets/` when they are there (tokenizer reconstructions, class grids of
every shipped generator with steps and measured times, the EAR growth GIF, image extension); without a
shipped tokenizer it trains one for `train_seconds` first.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from argen.apps.extend import extend_images
from argen.apps.reconstruct import ReconstructConfig, reconstruction_report
from argen.device import dtype_name, resolve_dtype
from argen.io import atomic_write, atomic_write_text
from argen.model_io import ASSETS

# generator asset -> (tokenizer asset, label in the demo, extra generation settings)
GENERATORS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "raster_fmnist": ("vq2_fmnist", "raster (LlamaGen)", {}),
    "ear_fmnist": ("vq2_fmnist", "EAR 31-step", {}),
    "ear_any_fmnist": ("vq2_fmnist", "EAR any-schedule, 8 passes", {"schedule": 8}),
    "var_fmnist": ("msvq2_fmnist", "VAR", {}),
    "actvar_fmnist": ("msvq2_fmnist", "ActVAR", {}),
}


@dataclass
class DemoConfig:
    """out: output folder. per_class: samples per class in each grid. train_seconds: tokenizer training
    budget when no tokenizer is shipped. assets: folder of shipped models. dtype: of every model run
    ("auto": bf16 where the CPU has bf16 units); tokenizer training uses it as its precision."""

    out: str = "out/demo"
    per_class: int = 4
    train_seconds: float = 40.0
    assets: str = str(ASSETS)
    seed: int = 0
    dtype: str = "auto"

    def __post_init__(self) -> None:
        resolve_dtype(self.dtype)  # a bad name fails here, before any work


def _asset(cfg: DemoConfig, name: str) -> Path | None:
    path = Path(cfg.assets) / name  # a model folder (config.json + model.safetensors)
    return path if (path / "model.safetensors").is_file() else None


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Run every demo section that the shipped models allow; returns (and writes) the summary."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    summary: dict[str, Any] = {"out": str(out), "dtype": dtype_name(resolve_dtype(cfg.dtype))}
    t0 = time.perf_counter()
    tokenizer = _asset(cfg, "vq2_fmnist") or _train_tokenizer(cfg, out, summary)
    recon = ReconstructConfig(str(tokenizer), n=500, out=str(out), fid=False, dtype=cfg.dtype)
    summary["reconstruction"] = reconstruction_report(recon)
    summary["generators"] = _generator_grids(cfg, out)
    if summary["generators"]:
        summary["side_by_side"] = str(_side_by_side(summary["generators"], out / "side_by_side.png"))
    else:
        summary["note"] = (
            f"no generator is shipped in {cfg.assets} yet; train one with `argen train gpt|var`, sample it "
            "with `argen sample` (see README)"
        )
    if _asset(cfg, "ear_fmnist") and _asset(cfg, "vq2_fmnist"):
        summary["extension"] = _extension(cfg, out)
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def _train_tokenizer(cfg: DemoConfig, out: Path, summary: dict[str, Any]) -> Path:
    """No shipped tokenizer: train the fmnist VQ preset for about `train_seconds` on this CPU."""
    from argen.config import TrainConfig, from_dict
    from argen.training.loop import train

    steps = max(20, int(cfg.train_seconds * 2.5))  # ~0.4 s per batch-64 step on a 2-core CPU
    tcfg = from_dict(
        TrainConfig,
        {
            "task": "tokenizer",
            "model": {"preset": "fmnist"},
            "steps": steps,
            "batch_size": 64,
            "out_dir": str(out / "tokenizer_run"),
            "ckpt_every": steps,
            "log_every": 10,
            "seed": cfg.seed,
            "precision": cfg.dtype,
            "optim": {"lr": 1e-3, "warmup_steps": 10, "weight_decay": 0.0},
        },
    )
    summary["tokenizer_training"] = {"steps": steps, "note": "no shipped tokenizer: trained here"}
    return train(tcfg)


def _generator_grids(cfg: DemoConfig, out: Path) -> list[dict[str, Any]]:
    """One class grid per shipped generator (rows = classes), with passes, FLOPs and measured time."""
    from argen.sampling.families import FRAME_IMAGES
    from argen.sampling.images import save_gif, save_grid
    from argen.sampling.pipeline import GenerateConfig, Pipeline

    rows = []
    for name, (tok_name, label, extra) in GENERATORS.items():
        model, tok = _asset(cfg, name), _asset(cfg, tok_name)
        if model is None or tok is None:
            continue
        pipe = Pipeline.load(
            GenerateConfig(
                model=str(model), tokenizer=str(tok), device="cpu", batch_size=64, dtype=cfg.dtype, **extra
            )
        )
        labels = torch.arange(pipe.num_classes).repeat_interleave(cfg.per_class)
        samples = pipe.sample(labels, seed=cfg.seed)  # timed: sampling and decoding, no animation frames
        grid = save_grid(samples.images, out / f"{name}.png", nrow=cfg.per_class * 2, scale=3)
        row = {
            "name": name,
            "label": label,
            "image": str(grid),
            "n": len(labels),
            "seconds": round(samples.seconds, 2),
            **pipe.cost(),
        }
        if name == "ear_fmnist":  # the same first images again (sample i depends on (seed, i) only)
            frames = pipe.sample(labels[:FRAME_IMAGES], frames=True, seed=cfg.seed).frames
            row["gif"] = str(save_gif(frames, out / "ear_growth.gif", nrow=cfg.per_class * 2, scale=3))
        rows.append(row)
    return rows


def _side_by_side(rows: list[dict[str, Any]], path: Path) -> Path:
    """The generators' class grids in one figure, each titled with its steps, FLOPs and measured time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    images = [Image.open(row["image"]) for row in rows]
    aspect = images[0].height / images[0].width
    fig, axes = plt.subplots(1, len(rows), figsize=(3.2 * len(rows), 3.2 * aspect + 0.9), squeeze=False)
    for ax, row, image in zip(axes[0], rows, images, strict=True):
        ax.imshow(image, cmap="gray")
        ax.set_title(
            f"{row['label']}\n{row['steps']} steps, {row['gflops']:.2f} GFLOPs/img\n"
            f"{row['n']} images in {row['seconds']:.1f} s (CPU)",
            fontsize=9,
        )
        ax.axis("off")
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=100, format="png"))
    plt.close(fig)
    return path


def _extension(cfg: DemoConfig, out: Path) -> dict[str, Any]:
    from argen.sampling.pipeline import GenerateConfig
    from argen.sampling.requests import ExtendRequest

    generate = GenerateConfig(
        model=str(_asset(cfg, "ear_fmnist")),
        tokenizer=str(_asset(cfg, "vq2_fmnist")),
        sampling={"seed": cfg.seed},
        device="cpu",
        dtype=cfg.dtype,
    )
    return extend_images(ExtendRequest(generate, centre=8, canvas=20), out)
