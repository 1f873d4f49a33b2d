"""`argen eval`, `argen bench`, `argen flops`, `argen plot`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from argen.cli.common import config_flags, generate_flags, ints, pipeline, positive_int, print_json
from argen.config import load_config, to_dict


def cmd_eval(args: argparse.Namespace) -> None:
    from argen.eval.evaluate import EvalConfig, evaluate

    cfg = load_config(EvalConfig, args.config, args.set)
    if args.samples and args.model:
        raise ValueError(
            "give either --samples (score existing images) or --model (sample, then score), not both"
        )
    if args.samples:
        cfg.samples = args.samples
    if cfg.samples is None and not args.model:
        raise ValueError("give --samples (folder or .npz) or --model to sample from")
    images = labels = extra = None
    if args.model:
        pipe = pipeline(args)
        import torch

        labels = torch.arange(args.n) % pipe.num_classes
        samples = pipe.sample(labels)
        images, cfg.sample_seed = samples.images, pipe.sampling.seed
        seconds = round(samples.seconds, 2)
        record = {"model": args.model, **pipe.cost(samples), "sample_seconds": seconds}
        # run: the sampling settings used; trained_with: the model file's training record (images seen)
        extra = {"generator": {**record, "run": pipe.run_record(), "trained_with": pipe.trained_with}}
    print_json(evaluate(cfg, images, labels, extra))


def cmd_bench(args: argparse.Namespace) -> None:
    import torch

    from argen.eval.bench import BenchConfig, run_bench

    if args.against:
        return _bench_against(args)
    pipe = pipeline(args)
    cfg = BenchConfig(
        batch_sizes=tuple(args.batch_sizes),
        warmup=args.warmup,
        repeats=args.repeats,
        device=args.device,
        out=args.out,
    )
    pipe.cfg.batch_size = max(cfg.batch_sizes)

    def sample_fn(batch: int) -> Any:
        return pipe.sample(torch.arange(batch) % pipe.num_classes).images

    # adaptive EAR chooses its passes while sampling: its cost is the mean over a calibration batch
    calibration = pipe.sample(torch.arange(16) % pipe.num_classes) if pipe.cfg.adaptive is not None else None
    cost = pipe.cost(calibration)
    meta = {
        "name": args.name or Path(args.model).stem,
        "model": args.model,
        **cost,
        "flops_per_image": cost["gflops"] * 1e9,
        "sampling": to_dict(pipe.sampling),
    }
    print_json(run_bench(cfg, sample_fn, meta, dtype=next(pipe.model.parameters()).dtype))


def _bench_against(args: argparse.Namespace) -> None:
    """`argen bench --against OTHER`: the model and OTHER timed side by side, same sampling settings."""
    import torch

    from argen.device import dtype_name
    from argen.eval.bench import compare_samplers
    from argen.io import atomic_write_text

    if args.against == args.model:
        raise ValueError(
            "--against names the model itself; give the model to compare with (e.g. its teacher)"
        )
    pipes = {
        args.model: pipeline(args),
        args.against: pipeline(argparse.Namespace(**{**vars(args), "model": args.against})),
    }
    for pipe in pipes.values():
        pipe.cfg.batch_size = max(args.batch_sizes)
        if pipe.cfg.adaptive is not None:
            raise ValueError("--against times fixed schedules; adaptive EAR's passes depend on the samples")

    def sampler(pipe: Any) -> Any:
        return lambda batch: pipe.sample(torch.arange(batch) % pipe.num_classes).images

    costs = {name: pipe.cost() for name, pipe in pipes.items()}
    res = compare_samplers(
        {name: sampler(pipe) for name, pipe in pipes.items()},
        args.batch_sizes,
        args.repeats,
        {name: cost["gflops"] for name, cost in costs.items()},
    )
    res.update(
        dtype={name: dtype_name(next(pipe.model.parameters()).dtype) for name, pipe in pipes.items()},
        gflops_per_image={name: cost["gflops"] for name, cost in costs.items()},
        sampling={name: to_dict(pipe.sampling) for name, pipe in pipes.items()},
    )
    if args.out:
        atomic_write_text(args.out, json.dumps(res, indent=2) + "\n")  # (makes the folder)
    print_json(res)


def cmd_flops(args: argparse.Namespace) -> None:
    print_json(pipeline(args).cost())


def cmd_plot(args: argparse.Namespace) -> None:
    from argen.eval.plot import plot_quality_speed

    print(f"plot written to {plot_quality_speed(args.results, args.out, x_key=args.x, y_key=args.y)}")


def add_evaluation(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="FID/KID/precision/recall (+ class accuracy) of samples or a generator")
    p.add_argument("--samples", help="folder of PNGs or ADM .npz")
    generate_flags(p, model_required=False)
    p.add_argument(
        "--n", type=positive_int, default=1000, help="with --model: images sampled (classes cycled)"
    )
    config_flags(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("bench", help="sampling throughput, latency, memory and FLOPs as JSON")
    generate_flags(p)
    p.add_argument("--batch-sizes", type=ints, default=[1, 8, 32], help="comma-separated batch sizes")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per batch size")
    p.add_argument("--repeats", type=positive_int, default=3, help="timed runs per batch size (median)")
    p.add_argument("--name", help="label of this result in plots")
    p.add_argument(
        "--against",
        metavar="MODEL",
        help="time the model side by side with MODEL (e.g. ActVAR against its teacher): interleaved calls, "
        "median process CPU time per batch size, their ratio and the FLOPs ratio",
    )
    p.add_argument("--out", help="JSON output path")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("flops", help="analytic per-image sampling cost: passes, tokens, GFLOPs")
    generate_flags(p)
    p.set_defaults(func=cmd_flops)

    p = sub.add_parser("plot", help="quality vs speed plot from result JSONs")
    p.add_argument("results", nargs="+", help="eval/bench JSON reports")
    p.add_argument("--out", default="out/quality_speed.png", help="output picture")
    p.add_argument("--x", default="img_per_s", help="report field on the x axis")
    p.add_argument("--y", default="fid", help="report field on the y axis")
    p.set_defaults(func=cmd_plot)
