"""`argen train`, `argen distill`, `argen tokenize`."""

from __future__ import annotations

import argparse

from argen.cli.common import config_flags, device, positive_int
from argen.config import DataConfig, TrainConfig, load_config, to_dict


def cmd_train(args: argparse.Namespace) -> None:
    from argen.distributed import is_main
    from argen.training.loop import train

    cfg = load_config(TrainConfig, args.config, _with_dtype(args), base={"task": args.task})
    path = train(cfg, resume=args.resume or None)
    if is_main():
        print(f"model written to {path}")


def cmd_distill(args: argparse.Namespace) -> None:
    from argen.distributed import is_main
    from argen.training.distill import DistillConfig
    from argen.training.loop import train

    path = train(load_config(DistillConfig, args.config, _with_dtype(args)).train_config())
    if is_main():
        print(f"ActVAR written to {path}")


def _with_dtype(args: argparse.Namespace) -> list[str]:
    """`--dtype X` is `--set precision=X` (bf16 = autocast over fp32 master weights); given after the other
    overrides, so it wins."""
    return [*args.set, f"precision={args.dtype}"] if args.dtype else args.set


def cmd_tokenize(args: argparse.Namespace) -> None:
    """Encode a dataset once: a token store folder (any number of torchrun ranks, resumable) or a `.npz`."""
    from argen.data import build_image_dataset, extract_tokens
    from argen.distributed import barrier, init_distributed
    from argen.models.checkpoints import load_model, tokenizer_fingerprint
    from argen.token_store import keep_freed_heap, tokenizer_encoder, write_token_store

    info = init_distributed(args.device)
    if info.device.type == "cpu":  # the encoder calls reuse freed pages instead of faulting in fresh ones
        keep_freed_heap()
    tok = load_model(args.tokenizer, info.device, expect=("vq", "msvq"))
    encode = tokenizer_encoder(tok)
    data = DataConfig(source=args.source, root=args.root, split=args.split, image_size=args.image_size)
    dataset = build_image_dataset(data)
    channels = dataset[0][0].shape[0] if len(dataset) else tok.config.in_channels
    if channels != tok.config.in_channels:
        raise ValueError(
            f"{args.tokenizer} encodes {tok.config.in_channels}-channel images but {data.source} gives "
            f"{channels}-channel ones: use a tokenizer trained on such images"
        )
    meta = {"tokenizer": str(args.tokenizer), "kind": tok.kind, "data": to_dict(data)}
    meta["tokenizer_fingerprint"] = tokenizer_fingerprint(tok)  # generators record it; a mismatch is caught
    if args.out.endswith(".npz"):
        if info.distributed or args.views != "none":
            raise ValueError("a .npz token file is one process and one view: give --out a folder (a store)")
        path = extract_tokens(encode, dataset, args.out, args.batch_size, info.device, meta)
    else:
        path = write_token_store(
            encode,
            dataset,
            args.out,
            tok.config.vocab_size,
            views=args.views,
            batch_size=args.batch_size,
            shard_size=args.shard_size,
            device=info.device,
            metadata=meta,
            num_workers=args.num_workers,
            rank=info.rank,
            world_size=info.world_size,
            barrier=barrier,
        )
    if info.is_main:
        print(f"tokens written to {path}")


def add_training(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a tokenizer, generator or classifier")
    p.add_argument("task", help="tokenizer | msvq | gpt | var | classifier")
    config_flags(p)
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in out_dir")
    _precision_flag(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "distill", help="distill a dense VAR into a sparse ActVAR (two stages; torchrun: DDP/FSDP2)"
    )
    config_flags(p)
    _precision_flag(p)
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser(
        "tokenize", help="encode an image dataset once into a token store (torchrun: sharded, resumable)"
    )
    p.add_argument("--tokenizer", required=True, help="argen vq or msvq model file")
    p.add_argument(
        "--out", required=True, help="token store folder (rerun to continue after a crash), or a .npz file"
    )
    p.add_argument(
        "--views",
        choices=("none", "flip", "ten_crop"),
        default="none",
        help="stored augmentations per image: none (1), flip (2), ten_crop (10, imagefolder); "
        "training draws one per epoch",
    )
    p.add_argument("--shard-size", type=positive_int, default=1024, help="images per shard (unit of resume)")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader workers decoding images")
    p.add_argument("--source", default="fashion_mnist", help="fashion_mnist | imagefolder")
    p.add_argument("--root", help="IDX directory or ImageFolder root (default: the Debian location)")
    p.add_argument("--split", default="train", help="dataset split")
    p.add_argument("--image-size", type=positive_int, default=32, help="image side after crop/resize")
    p.add_argument("--batch-size", type=positive_int, default=256, help="images per encoder batch (x views)")
    p.add_argument("--device", type=device, default="auto", help="auto | cpu | cuda | cuda:N")
    p.set_defaults(func=cmd_tokenize)


def _precision_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dtype",
        choices=("auto", "bf16", "fp32"),
        help="training precision, the same as --set precision=X (bf16: autocast over fp32 master weights; "
        "auto = bf16 where the device has bf16 units); unset: the config's precision",
    )
