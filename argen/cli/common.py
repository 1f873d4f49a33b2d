"""Flags and helpers shared by the command groups."""

from __future__ import annotations

import argparse
import json
from typing import Any


def ints(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from e


def schedule(text: str) -> str | int | list[int]:
    """`sides`, `rings`, `tokens:K`, a pass count (`8`) or comma-separated group sizes."""
    if "," in text:
        return ints(text)
    return int(text) if text.isdigit() else text


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def config_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="JSON config file (see configs/)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, dotted for nested ones (repeatable): --set optim.lr=1e-3",
    )


def generate_flags(
    p: argparse.ArgumentParser, model_required: bool = True, tokenizer_required: bool = True
) -> None:
    p.add_argument("--model", required=model_required, help="generator file (kind gpt, var or actvar)")
    p.add_argument("--tokenizer", required=tokenizer_required, default="", help="its tokenizer file")
    p.add_argument("--schedule", type=schedule, help="GPT/EAR: sides | rings | tokens:K | passes | sizes")
    p.add_argument("--order", help="GPT: raster | spiral | random (default: the model's)")
    p.add_argument("--cfg", type=float, dest="cfg_scale", help="guidance scale (1 = off)")
    p.add_argument("--temperature", type=float)
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--sampler", default="fast", help="VAR: fast (static cache) | reference (no cache)")
    p.add_argument("--adaptive", type=float, help="EAR: confidence threshold of the adaptive schedule")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="auto")


def pipeline(args: argparse.Namespace) -> Any:
    from argen.sampling.pipeline import GenerateConfig, Pipeline

    sampling = {
        k: getattr(args, k)
        for k in ("cfg_scale", "temperature", "top_k", "top_p", "seed")
        if getattr(args, k) is not None
    }
    cfg = GenerateConfig(
        model=args.model,
        tokenizer=args.tokenizer,
        schedule=args.schedule,
        order=args.order,
        sampling=sampling,
        batch_size=args.batch_size,
        device=args.device,
        sampler=args.sampler,
        adaptive=args.adaptive,
    )
    return Pipeline.load(cfg)


def class_labels(pipe: Any, classes: list[int] | None, per_class: int) -> Any:
    import torch

    classes = list(range(pipe.num_classes)) if classes is None else classes
    return pipe.check_labels(torch.tensor(classes).repeat_interleave(per_class))
