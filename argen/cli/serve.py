"""`argen serve` (HTTP server batching the requests of many clients; needs the serve extra) and
`argen serve-bench` (its throughput and latency under 1, 4, 16 clients)."""

from __future__ import annotations

import argparse
from pathlib import Path

from argen.cli.common import device, ints, positive_int, print_json

SERVE_DTYPE_HELP = (
    "fp32: a request's images are byte-identical however it is batched (on CPU); bf16 / auto (bf16 where "
    "the device has bf16 units): batches change float rounding, so an image can differ where two tokens "
    "are nearly tied (1 in 5 images of ear_fmnist, measured)"
)


def cmd_serve(args: argparse.Namespace) -> None:
    from argen.apps.serve.engine import ServeConfig, exact_cpu_matmuls

    exact_cpu_matmuls()  # before the process's first matmul
    cfg = ServeConfig(
        models=args.model,
        host=args.host,
        port=args.port,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        queue=args.queue,
        dtype=args.dtype,
        device=args.device,
        drain_s=args.drain_s,
    )
    try:
        from argen.apps.serve.http import serve
    except ModuleNotFoundError as e:
        if e.name not in ("fastapi", "uvicorn", "starlette"):
            raise
        raise ValueError("argen serve needs the serve extra: pip install -e '.[serve]'") from e
    print(f"argen serve: loading {', '.join(cfg.models)}", flush=True)
    scheduler = serve(cfg, ready=lambda url: print(f"argen serve: listening on {url}", flush=True))
    c = scheduler.counters
    print(f"argen serve: stopped; answered {c.answered} requests ({c.images} images) in {c.batches} batches")


def cmd_serve_bench(args: argparse.Namespace) -> None:
    from argen.eval.serve_bench import ServeBenchConfig, run_serve_bench

    cfg = ServeBenchConfig(
        model=args.model,
        clients=tuple(args.clients),
        requests=args.requests,
        rounds=args.rounds,
        n=args.n,
        time_limit_s=args.time_limit,
        url=args.url,
        server_threads=args.server_threads,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        dtype=args.dtype,
        out=args.out or f"results/serve/{Path(args.model).name}.json",
    )
    print_json(run_serve_bench(cfg))


def add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="HTTP server: batches the requests of many clients (needs the serve extra)",
        description="Serve generators over HTTP (GET /health, GET /v1/models, POST /v1/generate, "
        "POST /v1/generate/stream); requests that share model, passes and CFG share a batch. "
        "SIGTERM answers the requests in flight, then exits. See docs/03-sampling-serving-app.md.",
    )
    p.add_argument(
        "--model",
        action="append",
        required=True,
        help="generator to serve: shipped name (ear_fmnist, ...) or folder that records its tokenizer "
        "(repeatable)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 exposes it to the network)")
    p.add_argument("--port", type=int, default=8000, help="port (0: any free port, printed at start)")
    p.add_argument("--max-batch", type=positive_int, default=16, help="images per batch (and per request)")
    p.add_argument(
        "--max-wait-ms",
        type=float,
        default=20.0,
        help="how long a request waits for others to fill its batch",
    )
    p.add_argument("--queue", type=positive_int, default=256, help="waiting requests; beyond: 503")
    p.add_argument("--dtype", default="fp32", choices=("fp32", "bf16", "auto"), help=SERVE_DTYPE_HELP)
    p.add_argument("--device", type=device, default="cpu", help="cpu | cuda | cuda:N | auto")
    p.add_argument("--drain-s", type=float, default=60.0, help="SIGTERM: seconds for requests in flight")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "serve-bench",
        help="throughput / p50 / p95 latency of argen serve under concurrent clients, as JSON",
        description="Start `argen serve` on 127.0.0.1 (or use --url), send the same requests from 1, 4, "
        "16... concurrent clients (1 = sequential serving), stop it with SIGTERM, write the JSON report.",
    )
    p.add_argument("--model", default="ear_fmnist", help="generator the server runs")
    p.add_argument("--clients", type=ints, default=[1, 4, 16], help="concurrent clients per setting")
    p.add_argument("--requests", type=positive_int, default=64, help="requests per setting")
    p.add_argument("--rounds", type=positive_int, default=2, help="settings interleaved in this many rounds")
    p.add_argument("--n", type=positive_int, default=1, help="images per request")
    p.add_argument("--time-limit", type=float, default=900.0, help="seconds for the whole benchmark")
    p.add_argument("--url", help="a running server on this machine (default: start one)")
    p.add_argument("--server-threads", type=positive_int, default=2, help="torch threads of the server")
    p.add_argument("--max-batch", type=positive_int, default=16, help="the server's --max-batch")
    p.add_argument("--max-wait-ms", type=float, default=20.0, help="the server's --max-wait-ms")
    p.add_argument("--dtype", default="fp32", choices=("fp32", "bf16", "auto"), help="the server's --dtype")
    p.add_argument("--out", help="JSON report (default: results/serve/MODEL.json)")
    p.set_defaults(func=cmd_serve_bench)
