"""`argen presets` and `argen fields`: what can be named in a config without reading the source."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
from typing import Any

from argen.cli.common import print_json

# task -> (module holding PRESETS, config class name)
_MODEL_CONFIGS = {
    "tokenizer": ("argen.tokenizers.vqgan", "VQConfig"),
    "msvq": ("argen.tokenizers.multiscale", "MSVQConfig"),
    "gpt": ("argen.models.gpt", "GPTConfig"),
    "var": ("argen.models.var", "VARConfig"),
    "actvar": ("argen.models.actvar", "ActVARConfig"),
    "classifier": ("argen.eval.classifier", "ClassifierConfig"),
}
# run-level configs: `argen fields <name>`
_RUN_CONFIGS = {
    "train": ("argen.config", "TrainConfig"),
    "distill": ("argen.training.distill", "DistillConfig"),
    "eval": ("argen.eval.evaluate", "EvalConfig"),
}


def _defaults(cls: type) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
            out[f.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
        else:
            out[f.name] = "(required)"
    return out


def cmd_presets(args: argparse.Namespace) -> None:
    tasks = [args.task] if args.task else list(_MODEL_CONFIGS)
    out = {}
    for task in tasks:
        if task not in _MODEL_CONFIGS:
            raise ValueError(f"unknown task {task!r}; choose one of {sorted(_MODEL_CONFIGS)}")
        out[task] = sorted(importlib.import_module(_MODEL_CONFIGS[task][0]).PRESETS)
    print_json(out)


def cmd_fields(args: argparse.Namespace) -> None:
    table = {**_RUN_CONFIGS, **{f"model:{k}": v for k, v in _MODEL_CONFIGS.items()}}
    if args.name not in table:
        raise ValueError(f"unknown config {args.name!r}; choose one of {sorted(table)}")
    module, name = table[args.name]
    print_json(_defaults(getattr(importlib.import_module(module), name)))


def add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("presets", help="list the model presets of every task (or one)")
    p.add_argument("task", nargs="?", help=f"one of {', '.join(_MODEL_CONFIGS)}")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("fields", help="list a config's fields and defaults (what --set and --config take)")
    names = [*_RUN_CONFIGS, *(f"model:{k}" for k in _MODEL_CONFIGS)]
    p.add_argument("name", help=f"one of {', '.join(names)}")
    p.set_defaults(func=cmd_fields)
