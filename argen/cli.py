"""The `argen` command line: each subcommand turns its flags into a config dataclass and calls the library.

argen train <task> [--config F] [--set key=value ...] [--resume]
argen distill [--config F] [--set key=value ...]
argen tokenize --tokenizer T --out tokens.npz [--split train]
argen sample --model M --tokenizer T [--classes 0,1] [--schedule 8] [--gif]
argen extend --model M --tokenizer T --centre 8 --canvas 24
argen eval --samples S.npz | --model M --tokenizer T --n 1000
argen bench --model M --tokenizer T [--batch-sizes 1,64]
argen flops --model M
argen convert --official var_d16.pth --kind var --preset d16 --out var_d16
argen plot results/*.json --out plot.png
argen demo --out out/demo
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from argen.config import DataConfig, TrainConfig, from_dict, load_config, to_dict


def _ints(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from e


def _schedule(text: str) -> str | int | list[int]:
    """`sides`, `rings`, `tokens:K`, a pass count (`8`) or comma-separated group sizes."""
    if "," in text:
        return _ints(text)
    return int(text) if text.isdigit() else text


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def _config_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="JSON config file (see configs/)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, dotted for nested ones (repeatable): --set optim.lr=1e-3",
    )


# ------------------------------------------------------------------------------------------- training
def cmd_train(args: argparse.Namespace) -> None:
    from argen.distributed import is_main
    from argen.training.loop import train

    cfg = load_config(TrainConfig, args.config, args.set, base={"task": args.task})
    path = train(cfg, resume=args.resume or None)
    if is_main():
        print(f"model written to {path}")


def cmd_distill(args: argparse.Namespace) -> None:
    from argen.training.distill import DistillConfig, distill

    print(f"ActVAR written to {distill(load_config(DistillConfig, args.config, args.set))}")


def cmd_tokenize(args: argparse.Namespace) -> None:
    import torch

    from argen.data import build_image_dataset, extract_tokens
    from argen.models.checkpoints import load_model
    from argen.sampling.pipeline import resolve_device

    device = resolve_device(args.device)
    tok = load_model(args.tokenizer, device)
    if tok.kind == "msvq":

        def encode(img: torch.Tensor) -> torch.Tensor:
            return torch.cat(tok.img_to_idxBl(img), dim=1)
    elif tok.kind == "vq":
        encode = tok.encode
    else:
        raise ValueError(f"{args.tokenizer} is a {tok.kind} model, not a tokenizer (vq or msvq)")
    data = DataConfig(source=args.source, root=args.root, split=args.split, image_size=args.image_size)
    meta = {"tokenizer": str(args.tokenizer), "kind": tok.kind, "data": to_dict(data)}
    path = extract_tokens(encode, build_image_dataset(data), args.out, args.batch_size, device, meta)
    print(f"tokens written to {path}")


def add_training(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a tokenizer, generator or classifier")
    p.add_argument("task", help="tokenizer | msvq | gpt | var | classifier")
    _config_flags(p)
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in out_dir")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("distill", help="distill a dense VAR into a sparse ActVAR (two stages)")
    _config_flags(p)
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser("tokenize", help="encode an image dataset once into a token .npz")
    p.add_argument("--tokenizer", required=True, help="argen vq or msvq model file")
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument("--source", default="fashion_mnist", help="fashion_mnist | imagefolder")
    p.add_argument("--root", help="IDX directory or ImageFolder root (default: the Debian location)")
    p.add_argument("--split", default="train")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_tokenize)


# ------------------------------------------------------------------------------------------- sampling
def _generate_flags(
    p: argparse.ArgumentParser, model_required: bool = True, tokenizer_required: bool = True
) -> None:
    p.add_argument("--model", required=model_required, help="generator file (kind gpt, var or actvar)")
    p.add_argument("--tokenizer", required=tokenizer_required, default="", help="its tokenizer file")
    p.add_argument("--schedule", type=_schedule, help="GPT/EAR: sides | rings | tokens:K | passes | sizes")
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


def _pipeline(args: argparse.Namespace) -> Any:
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


def _class_labels(pipe: Any, classes: list[int] | None, per_class: int) -> Any:
    import torch

    classes = list(range(pipe.num_classes)) if classes is None else classes
    return pipe.check_labels(torch.tensor(classes).repeat_interleave(per_class))


def cmd_sample(args: argparse.Namespace) -> None:
    from argen.sampling.images import save_gif, save_grid, save_strip
    from argen.sampling.writer import save_adm_npz

    pipe = _pipeline(args)
    labels = _class_labels(pipe, args.classes, args.n_per_class)
    out = Path(args.out)
    samples = pipe.sample(labels, frames=args.gif)
    grid = save_grid(samples.images, out / "samples.png", nrow=args.n_per_class, scale=args.scale)
    report = {
        "grid": str(grid),
        "n": len(labels),
        "seconds": round(samples.seconds, 3),
        "img_per_s": round(len(labels) / samples.seconds, 2),
        **pipe.cost(),
        "steps": samples.passes,  # passes actually run (adaptive EAR schedules choose them while sampling)
    }
    if args.gif and samples.frames:
        name = "growth.gif" if pipe.family == "gpt" else "scales.gif"
        report["gif"] = str(save_gif(samples.frames, out / name, nrow=args.n_per_class, scale=args.scale))
        if pipe.family == "var":
            report["strip"] = str(save_strip(samples.frames, out / "scales.png", scale=args.scale))
    if args.npz:
        report["npz"] = str(save_adm_npz(samples.images, samples.labels, out / "samples.npz"))
    (out / "sample.json").write_text(json.dumps(report, indent=2) + "\n")
    _print_json(report)


def cmd_generate(args: argparse.Namespace) -> None:
    """Many samples (FID sets) as shards named by global index; under torchrun each rank takes its share."""
    from argen.distributed import DistInfo, init_distributed
    from argen.sampling.writer import pack_npz, write_samples

    info: DistInfo = init_distributed(args.device)
    args.device = str(info.device)
    pipe = _pipeline(args)

    def sample_fn(labels_B: Any, seeds_B: Any) -> Any:
        return pipe.sample(labels_B, seed=int(seeds_B[0])).images

    check = write_samples(
        sample_fn,
        args.out,
        args.n,
        labels=pipe.num_classes,
        batch_size=args.batch_size,
        fmt="npz",
        seed=pipe.sampling.seed,
    )
    if info.is_main:
        packed = pack_npz(args.out, Path(args.out).with_suffix(".npz"), args.n)
        _print_json({"folder": args.out, "npz": str(packed), "n": args.n, "ok": check.ok, **pipe.cost()})


def cmd_extend(args: argparse.Namespace) -> None:
    from argen.sampling.extend import ExtendConfig, extend_images

    cfg = ExtendConfig(
        model=args.model,
        tokenizer=args.tokenizer,
        centre=args.centre,
        canvas=args.canvas,
        images=args.images,
        classes=args.classes,
        cfg_scale=args.cfg_scale or 2.0,
        seed=args.seed or 0,
        device=args.device,
    )
    _print_json(extend_images(cfg, Path(args.out)))


def add_sampling(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="class-conditional samples as a PNG grid (+ growth GIF / scale strip)")
    _generate_flags(p)
    p.add_argument("--classes", type=_ints, help="class ids, comma-separated (default: all)")
    p.add_argument("--n-per-class", type=int, default=8)
    p.add_argument("--out", default="out/sample")
    p.add_argument("--gif", action="store_true", help="EAR: growth GIF; VAR: per-scale GIF and strip")
    p.add_argument("--npz", action="store_true", help="also write samples.npz (ADM format) for `argen eval`")
    p.add_argument("--scale", type=int, default=3, help="pixel upscaling of the written images")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("generate", help="N samples as shards by global index (torchrun: all ranks share)")
    _generate_flags(p)
    p.add_argument("--n", type=int, default=10000, help="number of samples (classes cycled)")
    p.add_argument("--out", default="out/generate", help="shard folder; the packed ADM .npz goes beside it")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("extend", help="EAR: extension / inpainting from centre tokens")
    p.add_argument("--model", required=True)
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--centre", type=int, default=8, help="side of the kept centre crop, in tokens")
    p.add_argument("--canvas", type=int, help="canvas side in tokens (default: model grid = inpainting)")
    p.add_argument("--images", type=_ints, default=[0, 1, 2, 3], help="Fashion-MNIST test indices")
    p.add_argument("--classes", type=_ints, help="class per image (default: the images' own labels)")
    p.add_argument("--cfg", type=float, dest="cfg_scale")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="out/extend")
    p.set_defaults(func=cmd_extend)


# ------------------------------------------------------------------------------------ evaluation
def cmd_eval(args: argparse.Namespace) -> None:
    from argen.eval.evaluate import EvalConfig, evaluate

    cfg = load_config(EvalConfig, args.config, args.set)
    if args.samples:
        cfg.samples = args.samples
    if cfg.samples is None and not args.model:
        raise ValueError("give --samples (folder or .npz) or --model/--tokenizer to sample from")
    images = labels = extra = None
    if args.model:
        pipe = _pipeline(args)
        import torch

        labels = torch.arange(args.n) % pipe.num_classes
        samples = pipe.sample(labels)
        images, cfg.sample_seed = samples.images, pipe.sampling.seed
        seconds = round(samples.seconds, 2)
        extra = {"generator": {"model": args.model, **pipe.cost(), "sample_seconds": seconds}}
    _print_json(evaluate(cfg, images, labels, extra))


def cmd_bench(args: argparse.Namespace) -> None:
    import torch

    from argen.eval.bench import BenchConfig, run_bench

    pipe = _pipeline(args)
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

    cost = pipe.cost()
    meta = {
        "name": args.name or Path(args.model).stem,
        "model": args.model,
        **cost,
        "flops_per_image": cost["gflops"] * 1e9,
        "sampling": to_dict(pipe.sampling),
    }
    _print_json(run_bench(cfg, sample_fn, meta))


def cmd_flops(args: argparse.Namespace) -> None:
    _print_json(_pipeline(args).cost())


def cmd_plot(args: argparse.Namespace) -> None:
    from argen.eval.plot import plot_quality_speed

    print(f"plot written to {plot_quality_speed(args.results, args.out, x_key=args.x, y_key=args.y)}")


def add_evaluation(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="FID/KID/precision/recall (+ class accuracy) of samples or a generator")
    p.add_argument("--samples", help="folder of PNGs or ADM .npz")
    _generate_flags(p, model_required=False, tokenizer_required=False)
    p.add_argument("--n", type=int, default=1000, help="with --model: images sampled (classes cycled)")
    _config_flags(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("bench", help="sampling throughput, latency, memory and FLOPs as JSON")
    _generate_flags(p)
    p.add_argument("--batch-sizes", type=_ints, default=[1, 8, 32])
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--name", help="label of this result in plots")
    p.add_argument("--out", help="JSON output path")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("flops", help="analytic per-image sampling cost: passes, tokens, GFLOPs")
    _generate_flags(p, tokenizer_required=False)
    p.set_defaults(func=cmd_flops)

    p = sub.add_parser("plot", help="quality vs speed plot from result JSONs")
    p.add_argument("results", nargs="+")
    p.add_argument("--out", default="out/quality_speed.png")
    p.add_argument("--x", default="img_per_s")
    p.add_argument("--y", default="fid")
    p.set_defaults(func=cmd_plot)


# ------------------------------------------------------------------------------------------ models
def cmd_convert(args: argparse.Namespace) -> None:
    from argen.models.convert import convert_official

    print(f"written {convert_official(args.official, args.kind, args.preset, args.out)}")


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
    from argen.tokenizers.evaluate import reconstruction_report

    _print_json(reconstruction_report(args.tokenizer, args.out, args.n, args.split))


def cmd_demo(args: argparse.Namespace) -> None:
    from argen.demo import DemoConfig, run_demo

    cfg = from_dict(
        DemoConfig, {"out": args.out, **({"train_seconds": args.train_seconds} if args.train_seconds else {})}
    )
    _print_json(run_demo(cfg))


def add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="official checkpoint (.pth/.pt) -> argen model file")
    p.add_argument("--official", required=True, help="official file, e.g. var_d16.pth, vq_ds16_c2i.pt")
    p.add_argument("--kind", required=True, help="vq | msvq | gpt | var")
    p.add_argument("--preset", help="model preset (e.g. d16, llamagen_vq16, GPT-B, EAR-B)")
    p.add_argument("--out", required=True, help="output path (NAME -> NAME.safetensors + NAME.json)")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("init", help="write a randomly initialised model file from a preset (for benchmarks)")
    p.add_argument("task", help="tokenizer | msvq | gpt | var | classifier")
    p.add_argument("--preset", required=True)
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="config field override")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("reconstruct", help="tokenizer PSNR, codebook usage and a reconstruction picture")
    p.add_argument("--tokenizer", required=True, help="argen vq or msvq model file")
    p.add_argument("--n", type=int, default=2000, help="Fashion-MNIST images evaluated")
    p.add_argument("--split", default="test")
    p.add_argument("--out", default="out/reconstruct")
    p.set_defaults(func=cmd_reconstruct)

    p = sub.add_parser("demo", help="the README's demo: run everything small on a CPU")
    p.add_argument("--out", default="out/demo")
    p.add_argument("--train-seconds", type=float, help="tokenizer training time when no model is shipped")
    p.set_defaults(func=cmd_demo)


# ------------------------------------------------------------------------------------------- main
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_training,
    add_sampling,
    add_evaluation,
    add_models,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="argen",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def _version() -> str:
    import argen

    return f"argen {argen.__version__}"


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as e:
        # User errors (bad config, missing data, mismatched checkpoint) get one clear message, no traceback.
        print(f"argen {args.command}: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"argen {args.command}: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
