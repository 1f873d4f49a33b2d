"""`argen sample`, `argen generate`, `argen extend`."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from argen.cli.common import (
    TOKENIZER_HELP,
    device,
    dtype_flag,
    generate_config,
    generate_flags,
    guidance,
    ints,
    output_folder,
    pipeline,
    positive_int,
    print_json,
)
from argen.io import atomic_write_text


def cmd_sample(args: argparse.Namespace) -> None:
    from argen.sampling.images import save_gif, save_grid, save_strip
    from argen.sampling.pipeline import Pipeline
    from argen.sampling.requests import SampleRequest
    from argen.sampling.writer import save_adm_npz

    out = output_folder(args.out, "sample.json", args.overwrite)
    request = SampleRequest(generate_config(args), args.classes, args.n_per_class)
    pipe = Pipeline.load(request.generate)
    labels = request.labels(pipe.num_classes)
    samples = pipe.sample(labels, frames=args.gif)
    grid = save_grid(samples.images, out / "samples.png", nrow=request.per_class, scale=args.scale)
    report = {
        "grid": str(grid),
        "n": len(labels),
        "seconds": round(samples.seconds, 3),
        "img_per_s": round(len(labels) / samples.seconds, 2),
        **pipe.cost(samples),  # adaptive EAR: the mean passes, tokens and FLOPs that really ran
        "run": pipe.run_record(),  # model and tokenizer digests, sampling settings
    }
    if args.gif and samples.frames:
        name = f"{pipe.family.frames_name}.gif"
        report["gif"] = str(save_gif(samples.frames, out / name, nrow=args.n_per_class, scale=args.scale))
        if pipe.family.frames_name == "scales":
            report["strip"] = str(save_strip(samples.frames, out / "scales.png", scale=args.scale))
    if args.npz:
        report["npz"] = str(save_adm_npz(samples.images, samples.labels, out / "samples.npz"))
    atomic_write_text(out / "sample.json", json.dumps(report, indent=2) + "\n")
    print_json(report)


def cmd_generate(args: argparse.Namespace) -> None:
    """Many samples (FID sets) as shards named by global index; under torchrun each rank takes its share.

    Sample i depends only on (seed, i, settings): any batch size and any number of ranks give the same
    folder. The folder records the run's settings and refuses another run's samples.
    """
    from argen.distributed import DistInfo, barrier, init_distributed
    from argen.sampling.writer import claim_folder, pack_npz, write_samples

    info: DistInfo = init_distributed(args.device)
    args.device = str(info.device)
    pipe = pipeline(args)
    if info.is_main:
        claim_folder(args.out, pipe.run_record(), overwrite=args.overwrite)
    barrier()
    costs = []

    def sample_fn(labels_B: Any, idx_B: Any) -> Any:
        samples = pipe.sample(labels_B, indices_N=idx_B)
        costs.append(samples)
        return samples.images

    check = write_samples(
        sample_fn, args.out, args.n, labels=pipe.num_classes, batch_size=args.batch_size, fmt="npz"
    )
    if info.is_main:
        packed = pack_npz(args.out, Path(args.out).with_suffix(".npz"), args.n)
        shapes = [s for c in costs for s in c.shapes_each]  # adaptive EAR: this rank's images
        cost = pipe.cost(dataclasses.replace(costs[0], shapes_each=shapes)) if shapes else pipe.cost()
        print_json({"folder": args.out, "npz": str(packed), "n": args.n, "ok": check.ok, **cost})


def cmd_extend(args: argparse.Namespace) -> None:
    from argen.apps.extend import extend_images
    from argen.sampling.pipeline import GenerateConfig
    from argen.sampling.requests import ExtendRequest

    sampling = {k: getattr(args, k) for k in ("cfg_scale", "seed") if getattr(args, k) is not None}
    generate = GenerateConfig(
        model=args.model, tokenizer=args.tokenizer, sampling=sampling, device=args.device, dtype=args.dtype
    )
    request = ExtendRequest(generate, args.centre, args.canvas, args.images, args.classes)
    print_json(extend_images(request, output_folder(args.out, "extend.png", args.overwrite)))


def add_sampling(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="class-conditional samples as a PNG grid (+ growth GIF / scale strip)")
    generate_flags(p)
    p.add_argument("--classes", type=ints, help="class ids, comma-separated (default: all)")
    p.add_argument("--n-per-class", type=int, default=8, help="images per class (>= 1)")
    p.add_argument("--out", default="out/sample", help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier sample run in --out")
    p.add_argument("--gif", action="store_true", help="EAR: growth GIF; VAR: per-scale GIF and strip")
    p.add_argument("--npz", action="store_true", help="also write samples.npz (ADM format) for `argen eval`")
    p.add_argument("--scale", type=int, default=3, help="pixel upscaling of the written images")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("generate", help="N samples as shards by global index (torchrun: all ranks share)")
    generate_flags(p)
    p.add_argument(
        "--num-samples",
        "--n",
        dest="n",
        type=positive_int,
        default=10000,
        help="number of samples, classes cycled (under torchrun write --num-samples: torchrun takes --n)",
    )
    p.add_argument("--out", default="out/generate", help="shard folder; the packed ADM .npz goes beside it")
    p.add_argument(
        "--overwrite", action="store_true", help="delete another run's samples in --out instead of refusing"
    )
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("extend", help="EAR: extension / inpainting from centre tokens")
    p.add_argument("--model", required=True, help="EAR model: file, folder or shipped name (ear_fmnist)")
    p.add_argument("--tokenizer", default="", help=TOKENIZER_HELP)
    p.add_argument("--centre", type=int, default=8, help="side of the kept centre crop, in tokens")
    p.add_argument("--canvas", type=int, help="canvas side in tokens (default: model grid = inpainting)")
    p.add_argument("--images", type=ints, default=[0, 1, 2, 3], help="Fashion-MNIST test indices")
    p.add_argument("--classes", type=ints, help="class per image (default: the images' own labels)")
    p.add_argument(
        "--cfg", type=guidance, dest="cfg_scale", help="guidance scale >= 0, 1 = off (default: the model's)"
    )
    p.add_argument("--seed", type=int, help="sampling seed (default: 0)")
    p.add_argument("--device", type=device, default="auto", help="auto | cpu | cuda | cuda:N")
    dtype_flag(p)
    p.add_argument("--out", default="out/extend", help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier extend.png in --out")
    p.set_defaults(func=cmd_extend)
