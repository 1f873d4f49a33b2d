"""`argen app`: the Gradio page (optional extra: pip install -e .[app])."""

from __future__ import annotations

import argparse

from argen.cli.common import device, dtype_flag


def cmd_app(args: argparse.Namespace) -> None:
    import torch

    from argen.apps.store import AppConfig

    if not args.threads:
        # A request is a few small batches: on a shared 2-core CPU one thread loads the models ~15x and
        # samples no slower than two (measured; see README "App and model folders").
        torch.set_num_threads(1)

    cfg = AppConfig(
        host=args.host,
        port=args.port,
        models=args.model,
        tokenizers=args.tokenizer,
        device=args.device,
        dtype=args.dtype,
        preload=not args.lazy,
    )
    try:
        from argen.apps.app import serve
    except ModuleNotFoundError as e:
        if e.name != "gradio":
            raise
        raise ValueError("the app needs Gradio: pip install -e '.[app]' (or `make setup-app`)") from e
    serve(cfg, ready=lambda url: print(f"argen app: serving on {url} (Ctrl+C stops it)", flush=True))


def add_app(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "app",
        help="web page to sample, extend and compare models (needs the app extra)",
        description="Serve the argen web page (one CPU thread unless `argen --threads N app` is given).",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (0.0.0.0 exposes the page to the network)"
    )
    p.add_argument("--port", type=int, default=7860, help="port to serve on")
    p.add_argument(
        "--model",
        action="append",
        default=[],
        help="also offer this generator (file or folder; repeatable); the shipped ones are always there",
    )
    p.add_argument(
        "--tokenizer", action="append", default=[], help="a tokenizer for the --model generators (repeatable)"
    )
    p.add_argument("--device", type=device, default="cpu", help="cpu | cuda | cuda:N | auto")
    dtype_flag(p)
    p.add_argument("--lazy", action="store_true", help="load models on first use instead of at start")
    p.set_defaults(func=cmd_app)
