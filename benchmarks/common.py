"""What several benchmarks share: random-weight model files and the default work folder."""

from __future__ import annotations

import os
from pathlib import Path

import torch

# model files made for measuring (random weights: speed does not depend on them); gitignored
WORK = Path(os.environ.get("ARGEN_BENCH_WORK", "runs/benchmarks"))


def random_model(task: str, preset: str, work: Path | None = None, **overrides) -> str:
    """Path of a random-weight `task` model of `preset` (as `argen init` writes it), made on first use."""
    from argen.models.checkpoints import save_model
    from argen.training.tasks import get_task

    folder = Path(work or WORK) / "random"
    suffix = "".join(f"_{k}{v}" for k, v in sorted(overrides.items()))
    out = folder / f"{task}_{preset}{suffix}"
    if not out.with_suffix(".safetensors").exists():
        folder.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        save_model(get_task(task).build_model({"preset": preset, **overrides}), str(out))
    return str(out.with_suffix(".safetensors"))
