"""The training log: one JSON line per logged step in metrics.jsonl, optionally mirrored to TensorBoard."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def _record_step(line: str) -> float:
    """Step of a metrics.jsonl line; a line cut short by a crash counts as past any step (dropped)."""
    try:
        return json.loads(line).get("step", 0)
    except json.JSONDecodeError:
        return math.inf


class MetricsLog:
    """out/metrics.jsonl (+ optional TensorBoard under out/tb) on the main rank; a no-op elsewhere.

    Records past `step` (the step a run resumes at) are dropped first, so the log matches the weights.
    """

    def __init__(self, out: Path, step: int, active: bool, tensorboard: bool = False):
        self.active = active
        self.path = out / "metrics.jsonl"
        self.tb = None
        if not self.active:
            return
        out.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            keep = [ln for ln in self.path.read_text().splitlines() if _record_step(ln) <= step]
            self.path.write_text("".join(ln + "\n" for ln in keep))
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise ValueError(
                    "tensorboard=True needs the tensorboard package: pip install 'argen[tensorboard]'"
                    " (or set tensorboard=false)"
                ) from e
            self.tb = SummaryWriter(str(out / "tb"))

    def log(self, record: dict[str, Any]) -> None:
        if not self.active:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, int | float):
                    self.tb.add_scalar(k, v, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
