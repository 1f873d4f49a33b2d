"""`argen convert`, `argen export`, `argen init`, `argen reconstruct`, `argen demo`."""

from __future__ import annotations

import argparse

from argen.cli.common import config_flags, dtype_flag, positive_int, print_json
from argen.config import from_dict, load_config


def cmd_convert(args: argparse.Namespace) -> None:
    from argen.models.convert import convert_official

    print(f"written {convert_official(args.official, args.kind, args.preset, args.out)}")


def cmd_export(args: argparse.Namespace) -> None:
    from argen.training.export import export_checkpoint

    print(f"written {export_checkpoint(args.checkpoint, args.out)}")


def cmd_init(args: argparse.Namespace) -> None:
    import torch

    from argen.config import parse_overrides
    from argen.models.checkpoints import save_model
    from argen.training.tasks import get_task

    torch.manual_seed(args.seed)
    model = get_task(args.task).build_model({"preset": args.preset, **parse_overrides(args.set)})
    model = getattr(model, "export_model", lambda: model)()
    print(f"random-weight {model.kind} model written to {save_model(model, args.out)}")


def cmd_reconstruct(args: argparse.Namespace) -> None:
    from argen.apps.reconstruct import ReconstructConfig, reconstruction_report
    from argen.eval.evaluate import EvalConfig

    scoring = load_config(EvalConfig, args.config, args.set)
    cfg = ReconstructConfig(
        args.tokenizer, args.n, args.split, args.out, fid=not args.no_fid, scoring=scoring, dtype=args.dtype
    )
    print_json(reconstruction_report(cfg))


def cmd_demo(args: argparse.Namespace) -> None:
    from argen.apps.demo import DemoConfig, run_demo

    fields = {"out": args.out, "dtype": args.dtype}
    if args.train_seconds:
        fields["train_seconds"] = args.train_seconds
    cfg = from_dict(DemoConfig, fields)
    print_json(run_demo(cfg))


def add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="official checkpoint (.pth/.pt) -> argen model file")
    p.add_argument("--official", required=True, help="official file, e.g. var_d16.pth, vq_ds16_c2i.pt")
    p.add_argument("--kind", required=True, help="vq | msvq | gpt | var")
    p.add_argument("--preset", help="model preset (e.g. d16, llamagen_vq16, GPT-B, EAR-B)")
    p.add_argument("--out", required=True, help="output path (NAME -> NAME.safetensors + NAME.json)")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser(
        "export", help="a training checkpoint (step_XXXXXXXX/) -> model file (EMA weights if kept)"
    )
    p.add_argument("--checkpoint", required=True, help="runs/NAME/checkpoints/step_XXXXXXXX")
    p.add_argument("--out", required=True, help="output path (NAME -> NAME.safetensors + NAME.json)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("init", help="write a randomly initialised model file from a preset (for benchmarks)")
    p.add_argument("task", help="tokenizer | msvq | gpt | var | classifier")
    p.add_argument("--preset", required=True, help="model preset (`argen presets` lists them)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="config field override")
    p.add_argument("--seed", type=int, default=0, help="initialisation seed")
    p.add_argument("--out", required=True, help="output path (NAME -> NAME.safetensors + NAME.json)")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser(
        "reconstruct",
        help="tokenizer rFID (scored like `argen eval` samples), PSNR, codebook usage and a picture",
    )
    p.add_argument("--tokenizer", required=True, help="vq or msvq model (file, folder or shipped name)")
    p.add_argument("--n", type=positive_int, default=1000, help="first N Fashion-MNIST images evaluated")
    p.add_argument("--split", default="test", help="Fashion-MNIST split")
    p.add_argument("--out", default="out/reconstruct", help="folder of reconstructions.png")
    p.add_argument(
        "--no-fid",
        action="store_true",
        help="PSNR, usage and perplexity only (skips the slow Inception part)",
    )
    config_flags(p)  # argen eval's settings: --set out=report.json writes the JSON report
    dtype_flag(p, "tokenizer dtype (Inception scoring stays fp32)")
    p.set_defaults(func=cmd_reconstruct)

    p = sub.add_parser("demo", help="the README's demo: run everything small on a CPU")
    p.add_argument("--out", default="out/demo", help="output folder")
    p.add_argument("--train-seconds", type=float, help="tokenizer training time when no model is shipped")
    dtype_flag(p, "dtype of every model the demo runs")
    p.set_defaults(func=cmd_demo)
