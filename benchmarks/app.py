"""Time `argen app`: start to its "serving on" line, then default sample requests through gradio_client.

Each start is a fresh `python -m argen app` process on a free port, timed (wall-clock) until it prints its
URL; then `--requests` default requests of the page (any-schedule EAR, 8 passes, one image per class, with
the growth GIF) go through `gradio_client`, each timed as a round trip. `--threads N` is passed on as
`argen --threads N app` (default: the app's one thread). Needs the app extra (gradio; gradio_client comes
with it): without it the result is {"skipped": ...}. Backs the start and request times of
docs/03-sampling-serving-app.md.

    python -m benchmarks app --starts 3 --requests 5 --out results/cpu/app.json
    python -m benchmarks app --starts 1 --requests 3 --threads 2
"""

from __future__ import annotations

import argparse
import importlib.util
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

SMOKE = ["--starts", "1", "--requests", "1", "--lazy"]

# the page's default request (the sample tab's inputs)
REQUEST_FIELDS = ("model", "classes", "per_class", "passes", "cfg", "temperature", "seed", "frames")
DEFAULT_REQUEST = ("ear_any_fmnist", "", 1, 8, 2.0, 1.0, 0, True)


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--starts", type=int, default=3)
    p.add_argument("--requests", type=int, default=5, help="per start")
    p.add_argument("--lazy", action="store_true", help="argen app --lazy: load models on first use")
    p.add_argument("--start-timeout", type=float, default=300, help="seconds to wait for the app's URL")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_url(proc: subprocess.Popen, timeout: float) -> None:
    """Read the app's output until its "serving on" line; fail with that output if it exits or hangs."""
    seen: list[str] = []
    end = time.monotonic() + timeout
    for line in proc.stdout:
        if "serving on" in line:
            return
        seen.append(line)
        if time.monotonic() > end:
            break
    raise RuntimeError("argen app did not start:\n" + "".join(seen[-40:]))


def one_start(client_cls: type, threads: int | None, lazy: bool, requests: int, timeout: float) -> tuple:
    """(start seconds, [request seconds], [result grid files]) of one app process, stopped after."""
    port = free_port()
    cmd = [sys.executable, "-m", "argen", *(["--threads", str(threads)] if threads else []), "app"]
    cmd += ["--port", str(port), *(["--lazy"] if lazy else [])]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_url(proc, timeout)
        start = time.perf_counter() - t0
        client = client_cls(f"http://127.0.0.1:{port}/", verbose=False)
        times, images = [], []
        for _ in range(requests):
            t0 = time.perf_counter()
            grid, _, _ = client.predict(*DEFAULT_REQUEST, api_name="/on_sample")
            times.append(time.perf_counter() - t0)
            images.append(grid)
    finally:
        proc.terminate()
        proc.wait()
    return start, times, images


def run(args: argparse.Namespace) -> dict[str, Any]:
    if importlib.util.find_spec("gradio") is None:  # the app needs it (found, not imported: seconds)
        return {"skipped": "the app extra is not installed: pip install -e '.[app]'"}
    try:
        from gradio_client import Client
    except ImportError as e:
        return {"skipped": f"gradio_client does not import ({e}): pip install -e '.[app]'"}
    starts, requests, images = [], [], []
    for _ in range(args.starts):
        start, times, grids = one_start(Client, args.threads, args.lazy, args.requests, args.start_timeout)
        starts.append(start)
        requests += times
        images += grids
    return {
        "threads": args.threads or 1,
        "lazy": args.lazy,
        "request": dict(zip(REQUEST_FIELDS, DEFAULT_REQUEST, strict=True)),
        "timed": "wall-clock: process start to the 'serving on' line; request round trips via gradio_client",
        "start_s": [round(s, 3) for s in starts],
        "start_median_s": statistics.median(starts),
        "request_s": [round(r, 3) for r in requests],
        "request_median_s": statistics.median(requests),
        "requests_with_an_image": sum(bool(g) for g in images),
    }


def check(result: dict[str, Any]) -> None:
    if "skipped" in result:
        return
    assert len(result["start_s"]) == 1 and len(result["request_s"]) == 1, result
    assert result["start_median_s"] > 0 and result["request_median_s"] > 0
    assert result["requests_with_an_image"] == 1, "the default request returned no image (an error message?)"
