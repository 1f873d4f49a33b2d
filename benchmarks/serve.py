"""`argen serve` under concurrent clients: images/s and latency at 1 (sequential), 4 and 16 clients.

The runner's form of `argen serve-bench` (same code, `argen.eval.serve_bench`): starts `argen serve` on a
free 127.0.0.1 port, sends the same requests from each number of concurrent clients in interleaved rounds,
stops the server with SIGTERM, and reports per setting images/s, p50/p95 latency, errors, lost requests, the
batch sizes the server ran and the images that differ from sequential serving. Backs the serving table of
docs/03-sampling-serving-app.md (`results/serve/ear_fmnist.json`).

    python -m benchmarks serve --model ear_fmnist --clients 1,4,16 --requests 64 --rounds 4 --server-threads 2
"""

from __future__ import annotations

import argparse
from typing import Any

SMOKE = [
    "--clients",
    "1,2",
    "--requests",
    "4",
    "--rounds",
    "2",
    "--server-threads",
    "1",
    "--time-limit",
    "120",
]


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="ear_fmnist", help="generator the server runs")
    p.add_argument("--clients", type=_ints, default=(1, 4, 16), help="concurrent clients per setting")
    p.add_argument("--requests", type=int, default=64, help="requests per setting")
    p.add_argument("--rounds", type=int, default=2, help="settings interleaved in this many rounds")
    p.add_argument("--n", type=int, default=1, help="images per request")
    p.add_argument("--time-limit", type=float, default=900.0, help="seconds for the whole benchmark")
    p.add_argument("--server-threads", type=int, default=2, help="torch threads of the server")
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--max-wait-ms", type=float, default=20.0)
    p.add_argument("--dtype", default="fp32", choices=("fp32", "bf16", "auto"), help="the server's --dtype")


def run(args: argparse.Namespace) -> dict[str, Any]:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        return {"skipped": "the serve extra is not installed (pip install -e '.[serve]'; `make test` does)"}
    from argen.eval.serve_bench import ServeBenchConfig, run_serve_bench

    cfg = ServeBenchConfig(
        model=args.model,
        clients=args.clients,
        requests=args.requests,
        rounds=args.rounds,
        n=args.n,
        time_limit_s=args.time_limit,
        server_threads=args.server_threads,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        dtype=args.dtype,
    )
    return run_serve_bench(cfg)


def check(result: dict[str, Any]) -> None:
    if "skipped" in result:
        return
    assert result["server"]["exit_code_after_sigterm"] == 0
    for setting in result["settings"]:  # every request answered, each image as sequential serving made it
        assert setting["ok"] == setting["requests"] and not setting["errors"] and setting["lost"] == 0
        assert setting["images_differing_from_sequential"] == 0 and setting["images_per_s"] > 0
