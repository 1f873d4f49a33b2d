"""Task registry: what `argen train <task>` builds (model, dataset) and which loss it optimises.

The built-in tasks are listed here from the builders and losses in `argen.training.objectives`; other code
(tests, extensions) adds its own with `register_task`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from argen.config import TrainConfig
from argen.training import distill, distill_data
from argen.training import objectives as obj
from argen.training.optim import Stage

# (model, batch, objective options) -> (scalar loss, metrics to log)
LossFn = Callable[[nn.Module, Any, dict[str, Any]], tuple[torch.Tensor, dict[str, float]]]


@dataclass(frozen=True)
class Task:
    """How to train one model family.

    build_model: model section of the TrainConfig ({"preset": ..., overrides}) -> model with `.config`.
    build_dataset: TrainConfig -> map-style dataset whose items collate into the loss's batch.
    loss: the objective, shared by training and distillation.
    stages: TrainConfig -> the run's stages (their steps add up to `steps`); None = one stage of
        `steps` steps with `optim`, every parameter as built.
    provenance: (TrainConfig, dataset) -> the `trained_with` record of the exported model; None = the
        trainer's (tokenizer of the token file, plain objective options).
    export_name: the exported model is `out_dir/<export_name>.safetensors`.
    """

    name: str
    build_model: Callable[[dict[str, Any]], nn.Module]
    build_dataset: Callable[[TrainConfig], Dataset]
    loss: LossFn
    stages: Callable[[TrainConfig], tuple[Stage, ...]] | None = None
    provenance: Callable[[TrainConfig, Dataset], dict] | None = None
    export_name: str = "model"


_TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    _TASKS[task.name] = task
    return task


for _task in (
    Task(
        "tokenizer",
        partial(obj.build_tokenizer, "vq"),
        partial(obj.tokenizer_dataset, kind="vq"),
        obj.tokenizer_loss,
    ),
    Task(
        "msvq",
        partial(obj.build_tokenizer, "msvq"),
        partial(obj.tokenizer_dataset, kind="msvq"),
        obj.tokenizer_loss,
    ),
    Task("gpt", obj.gpt_model, obj.gpt_dataset, obj.gpt_loss),
    Task("var", obj.var_model, obj.var_dataset, obj.var_loss),
    Task("classifier", obj.classifier_model, obj.classifier_dataset, obj.classifier_loss),
    Task(
        "distill",
        distill_data.build_distiller,
        distill_data.distill_dataset,
        distill.distill_loss,
        stages=distill.distill_stages,
        provenance=distill_data.distill_provenance,
        export_name="actvar",
    ),
):
    register_task(_task)


def get_task(name: str) -> Task:
    if name not in _TASKS:
        raise ValueError(f"unknown training task {name!r}; choose one of {sorted(_TASKS)}")
    return _TASKS[name]
