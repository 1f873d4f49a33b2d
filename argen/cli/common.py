"""Flags and helpers shared by the command groups."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
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


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from e
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _float_in(lo: float, hi: float, lo_open: bool, hi_open: bool, what: str) -> Any:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from e
        ok = (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
        if not ok:  # also catches nan
            left, right = "(" if lo_open else "[", ")" if hi_open else "]"
            raise argparse.ArgumentTypeError(f"{what} must be in {left}{lo}, {hi}{right}, got {text}")
        return value

    return parse


probability = _float_in(0.0, 1.0, True, True, "the adaptive confidence threshold")


def _sampling_value(name: str) -> Any:
    """A flag for `SamplingConfig.<name>`: parsed here, checked by SamplingConfig, the check (and message) the
    app and the server share."""

    def parse(text: str) -> float:
        from argen.sampling.logits import SamplingConfig

        try:
            value = float(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from e
        try:
            SamplingConfig(**{name: value})
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from e
        return value

    return parse


guidance, temperature, top_p = (_sampling_value(n) for n in ("cfg_scale", "temperature", "top_p"))


def device(text: str) -> str:
    """Validated early so a bad name or a missing GPU is one line, not a traceback later."""
    from argen.distributed import resolve_device

    try:
        resolve_device(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e
    return text


TOKENIZER_HELP = "its tokenizer: file, folder or name (default: the one the model records, if found)"


def generate_flags(p: argparse.ArgumentParser, model_required: bool = True) -> None:
    p.add_argument(
        "--model",
        required=model_required,
        help="generator: model file or folder, or a shipped model's name (ear_fmnist, var_fmnist, ...)",
    )
    p.add_argument("--tokenizer", default="", help=TOKENIZER_HELP)
    p.add_argument(
        "--schedule",
        type=schedule,
        help="EAR: sides | rings | tokens:K | passes | sizes (default: the model's)",
    )
    p.add_argument("--order", help="GPT: the model's own order only (raster | spiral | random)")
    p.add_argument(
        "--cfg", type=guidance, dest="cfg_scale", help="guidance scale >= 0, 1 = off (default: the model's)"
    )
    p.add_argument("--temperature", type=temperature, help="> 0 (default: the model's)")
    p.add_argument("--top-k", type=int, help="keep the k most likely tokens, 0 = all (default: model's)")
    p.add_argument("--top-p", type=top_p, help="nucleus mass in (0, 1] (default: the model's)")
    p.add_argument("--seed", type=int, help="sampling seed; sample i depends on (seed, i) only (default: 0)")
    p.add_argument(
        "--sampler",
        default="fast",
        choices=("fast", "reference"),
        help="VAR: fast (static cache) | reference (no cache)",
    )
    p.add_argument(
        "--adaptive",
        type=probability,
        nargs="?",
        const=-1.0,
        metavar="THRESHOLD",
        help="EAR: confidence-adaptive passes; the threshold in (0, 1) (bare --adaptive: the default, "
        "chosen by `python -m benchmarks adaptive`)",
    )
    p.add_argument("--batch-size", type=positive_int, default=32, help="images per forward batch")
    p.add_argument("--device", type=device, default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument(
        "--compile",
        action="store_true",
        help="raster/EAR: torch.compile each cached pass, as CUDA graphs on a GPU (raster-B 6.4x at batch 1 "
        "on an H200; the first call compiles); on a CPU minutes of compiling for little",
    )
    dtype_flag(p)


DTYPE_HELP = "auto = bf16 where the device has bf16 units (AMX/AVX512-BF16 CPU, sm_80+ GPU), else fp32"


def dtype_flag(p: argparse.ArgumentParser, what: str = "model dtype") -> None:
    """`--dtype auto|bf16|fp32`, the same flag on every command that runs a model."""
    p.add_argument("--dtype", default="auto", choices=("auto", "bf16", "fp32"), help=f"{what}; {DTYPE_HELP}")


def pipeline(args: argparse.Namespace) -> Any:
    from argen.sampling.pipeline import Pipeline

    return Pipeline.load(generate_config(args))


def generate_config(args: argparse.Namespace) -> Any:
    """The `GenerateConfig` of `generate_flags`; sampling flags left out are the model's own."""
    from argen.sampling.pipeline import GenerateConfig

    sampling = {
        k: getattr(args, k)
        for k in ("cfg_scale", "temperature", "top_k", "top_p", "seed")
        if getattr(args, k) is not None
    }
    return GenerateConfig(
        model=args.model,
        tokenizer=args.tokenizer,
        schedule=args.schedule,
        order=args.order,
        sampling=sampling,
        batch_size=args.batch_size,
        device=args.device,
        sampler=args.sampler,
        adaptive=_adaptive_threshold(args.adaptive),
        dtype=args.dtype,
        compile=args.compile,
    )


def output_folder(folder: str, marker: str, overwrite: bool) -> Path:
    """`folder` as an output folder: refused when it is a file, or when it holds an earlier run's `marker`
    file (unless `overwrite`), so results are never silently replaced."""
    out = Path(folder)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {folder} is a file; give a folder (it is created if missing)")
    if (out / marker).exists() and not overwrite:
        raise ValueError(
            f"{out} holds an earlier run ({marker}); use another --out, or --overwrite to replace it"
        )
    return out


def _adaptive_threshold(value: float | None) -> float | None:
    if value is None or value >= 0:
        return value
    from argen.sampling.ar import AdaptiveConfig

    return AdaptiveConfig().threshold  # bare --adaptive
