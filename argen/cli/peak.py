"""`argen peak`: this machine's fp32 and bf16 matmul peak at the current thread count."""

from __future__ import annotations

import argparse

from argen.cli.common import device, positive_int, print_json


def cmd_peak(args: argparse.Namespace) -> None:
    from pathlib import Path

    from argen.device import measure_peak
    from argen.distributed import resolve_device

    dev = resolve_device(args.device)
    res = measure_peak(dev, args.dtypes.split(","), repeats=args.repeats)
    if args.out:
        import json

        from argen.io import atomic_write_text

        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, json.dumps(res, indent=2) + "\n")
    print_json(res)


def add_peak(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "peak", help="matmul peak FLOP/s per dtype at the current thread count (the MFU denominator)"
    )
    p.add_argument("--dtypes", default="fp32,bf16", help="comma-separated: fp32, bf16")
    p.add_argument("--repeats", type=positive_int, default=5, help="timed calls per shape (median)")
    p.add_argument("--device", type=device, default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--out", help="JSON output path")
    p.set_defaults(func=cmd_peak)
