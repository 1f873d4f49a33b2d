"""Task registry: what `argen train <task>` builds (model, dataset) and which loss it optimises.

Each model family registers its task in `argen.training.objectives`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from argen.config import TrainConfig

# (model, batch, objective options) -> (scalar loss, metrics to log)
LossFn = Callable[[nn.Module, Any, dict[str, Any]], tuple[torch.Tensor, dict[str, float]]]


@dataclass(frozen=True)
class Task:
    """How to train one model family.

    build_model: model section of the TrainConfig ({"preset": ..., overrides}) -> model with `.config`.
    build_dataset: TrainConfig -> map-style dataset whose items collate into the loss's batch.
    loss: the objective, shared by training and distillation.
    """

    name: str
    build_model: Callable[[dict[str, Any]], nn.Module]
    build_dataset: Callable[[TrainConfig], Dataset]
    loss: LossFn


_TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    _TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    importlib.import_module("argen.training.objectives")
    if name not in _TASKS:
        raise ValueError(f"unknown training task {name!r}; choose one of {sorted(_TASKS)}")
    return _TASKS[name]
