"""`argen serve-bench`: throughput and latency of `argen serve` under 1, 4, 16... concurrent clients, as JSON.

The same requests (request i: class i % 10, seed i, `n` images) are sent by each setting: with one client
they go one at a time (sequential serving, the baseline), with c clients c at a time, each client sending
its next request when its last is answered. Settings run interleaved in rounds, so load that changes while
the benchmark runs falls on all of them alike. Everything is bounded: a request count per setting, a time
limit for the whole run and a timeout per request; the server (started here unless a URL is given) listens
on 127.0.0.1 and is stopped with SIGTERM at the end. Each image's digest is compared with the sequential
setting's: batched serving must give the same bytes.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from argen.device import cpu_model
from argen.io import atomic_write_text

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class ServeBenchConfig:
    """model: generator the server runs. clients: concurrency of each setting (1 = sequential serving).
    requests: requests per setting (split evenly over `rounds`). n: images per request. time_limit_s: the
    whole benchmark; timeout_s: one request. url: a running server on this machine; None starts
    `argen --threads server_threads serve` with max_batch / max_wait_ms / dtype. out: JSON path or None."""

    model: str = "ear_fmnist"
    clients: tuple[int, ...] = (1, 4, 16)
    requests: int = 64
    rounds: int = 2
    n: int = 1
    time_limit_s: float = 900.0
    timeout_s: float = 120.0
    url: str | None = None
    server_threads: int = 2
    max_batch: int = 16
    max_wait_ms: float = 20.0
    dtype: str = "fp32"
    out: str | None = None

    def __post_init__(self) -> None:
        self.clients = tuple(self.clients)
        if min(self.clients, default=0) < 1 or 1 not in self.clients:
            raise ValueError(f"clients: positive numbers with 1 (sequential serving), got {self.clients}")
        if self.rounds < 1 or self.requests < self.rounds or self.requests % self.rounds:
            raise ValueError(
                f"requests ({self.requests}) must be a positive multiple of rounds ({self.rounds})"
            )
        if self.n < 1 or self.server_threads < 1 or self.max_batch < 1:
            raise ValueError("n, server_threads and max_batch must be >= 1")
        if not (0 < self.time_limit_s < float("inf") and 0 < self.timeout_s < float("inf")):
            raise ValueError("time_limit_s and timeout_s must be positive numbers of seconds")
        if self.url is not None and urlsplit(self.url).hostname not in LOOPBACK:
            raise ValueError(f"serve-bench drives a server on this machine only (127.0.0.1), got {self.url}")


def _request(url: str, method: str, path: str, body: Any = None, timeout: float = 30.0) -> tuple[int, Any]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request(method, path, json.dumps(body) if body is not None else None)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


class ServerProcess:
    """`argen --threads THREADS serve ARGS` in a subprocess; `url` once it listens (give `--port 0` for a
    free port); `stop` sends SIGTERM, waits for the drain and returns the exit code."""

    def __init__(self, serve_args: list[str], threads: int, ready_s: float = 300.0) -> None:
        cmd = [sys.executable, "-m", "argen", "--threads", str(threads), "serve", *serve_args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self.url = ""
        listening = threading.Event()

        def read() -> None:
            for line in self.proc.stdout:
                self.lines.append(line.rstrip())
                if "listening on " in line:
                    self.url = line.split("listening on ")[1].split()[0]
                    listening.set()

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + ready_s
        while not listening.wait(0.2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("argen serve did not start:\n" + "\n".join(self.lines[-20:]))

    def stop(self, timeout: float = 120.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        return self.proc.returncode


def _run_setting(
    url: str, bodies: list[dict], clients: int, deadline: float, timeout: float
) -> dict[str, Any]:
    """Send `bodies` from `clients` threads (each with one keep-alive connection), all starting at once;
    per request: status, latency, batch size and image digests."""
    parts, lock, results, next_i = urlsplit(url), threading.Lock(), {}, iter(range(len(bodies)))
    start = threading.Barrier(clients + 1)  # threads start over some milliseconds: release them together

    def client() -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        start.wait()
        while time.monotonic() < deadline:
            with lock:
                i = next(next_i, None)
            if i is None:
                break
            t0 = time.perf_counter()
            try:
                conn.request(
                    "POST", "/v1/generate", json.dumps(bodies[i]), {"Content-Type": "application/json"}
                )
                response = conn.getresponse()
                status, answer = response.status, json.loads(response.read())
            except (OSError, http.client.HTTPException, json.JSONDecodeError) as e:
                results[i] = {"status": f"no answer: {type(e).__name__}"}
                conn.close()
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
                continue
            results[i] = {"status": status, "latency_s": time.perf_counter() - t0}
            if status == 200:
                results[i]["batch_images"] = answer["batch"]["images"]
                results[i]["digests"] = [
                    hashlib.sha256(im.encode()).hexdigest()[:16] for im in answer["images"]
                ]
        conn.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()) + timeout + 5)
    return {"wall_s": time.perf_counter() - t0, "results": results, "sent": len(bodies)}


def _summary(clients: int, runs: list[dict[str, Any]], n: int) -> dict[str, Any]:
    results = [r for run in runs for r in run["results"].values()]
    ok = [r for r in results if r["status"] == 200]
    errors: dict[str, int] = {}
    for r in results:
        if r["status"] != 200:
            errors[str(r["status"])] = errors.get(str(r["status"]), 0) + 1
    batches: dict[str, int] = {}
    for r in ok:
        batches[str(r["batch_images"])] = batches.get(str(r["batch_images"]), 0) + 1
    wall = sum(run["wall_s"] for run in runs)
    latency = np.array([r["latency_s"] for r in ok]) if ok else np.zeros(1)
    return {
        "clients": clients,
        "requests": sum(run["sent"] for run in runs),
        "ok": len(ok),
        "errors": errors,
        "lost": sum(1 for r in results if str(r["status"]).startswith("no answer")),
        "unsent": sum(run["sent"] for run in runs) - len(results),
        "images": n * len(ok),
        "wall_s": round(wall, 3),
        "images_per_s": round(n * len(ok) / wall, 3),
        "latency_s": {
            "p50": round(float(np.percentile(latency, 50)), 4),
            "p95": round(float(np.percentile(latency, 95)), 4),
            "mean": round(float(latency.mean()), 4),
            "max": round(float(latency.max()), 4),
        },
        "requests_by_batch_images": dict(sorted(batches.items(), key=lambda kv: int(kv[0]))),
    }


def run_serve_bench(cfg: ServeBenchConfig) -> dict[str, Any]:
    """Run the settings (see the module docstring) and return (and write to `cfg.out`) the report."""
    server = None
    if cfg.url is None:
        args = ["--model", cfg.model, "--port", "0", "--max-batch", str(cfg.max_batch), "--max-wait-ms",
                str(cfg.max_wait_ms), "--queue", str(2 * max(cfg.clients)), "--dtype", cfg.dtype]  # fmt: skip
        server = ServerProcess(args, cfg.server_threads)
    url = cfg.url or server.url
    bodies = [{"class_label": i % 10, "seed": i, "n": cfg.n} for i in range(cfg.requests)]
    per_round = cfg.requests // cfg.rounds
    deadline = time.monotonic() + cfg.time_limit_s
    load_before = os.getloadavg()[0]
    runs: dict[int, list[dict[str, Any]]] = {c: [] for c in cfg.clients}
    try:
        _, models = _request(url, "GET", "/v1/models")
        model = next(m for m in models["models"] if m["name"] == cfg.model)
        for first in range(0, cfg.requests, per_round):
            chunk = [{"model": cfg.model, **b} for b in bodies[first : first + per_round]]
            for clients in cfg.clients:
                run = _run_setting(url, chunk, clients, deadline, cfg.timeout_s)
                run["results"] = {first + i: v for i, v in run["results"].items()}
                runs[clients].append(run)
        _, health = _request(url, "GET", "/health")
    finally:
        exit_code = server.stop() if server is not None else None
    settings = [_summary(c, runs[c], cfg.n) for c in cfg.clients]
    digests = {c: {i: r.get("digests") for run in runs[c] for i, r in run["results"].items()} for c in runs}
    for s in settings:
        mine, seq = digests[s["clients"]], digests[1]
        pairs = [(seq[i], d) for i, d in mine.items() if d and seq.get(i)]
        s["images_differing_from_sequential"] = sum(
            a != b for x, y in pairs for a, b in zip(x, y, strict=True)
        )
    sequential = settings[cfg.clients.index(1)]["images_per_s"]
    report = {
        "model": model,
        "server": {
            "url": url,
            "started_here": server is not None,
            "threads": cfg.server_threads if server is not None else None,
            "max_batch": cfg.max_batch,
            "max_wait_ms": cfg.max_wait_ms,
            "exit_code_after_sigterm": exit_code,
            "served": {k: health[k] for k in ("answered", "batches", "images", "batch_images")},
        },
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "load_avg_1min": [load_before, os.getloadavg()[0]],
        },
        "requests_per_setting": cfg.requests,
        "rounds": cfg.rounds,
        "n": cfg.n,
        "sequential": "the 1-client setting: the same requests sent one at a time",
        "settings": settings,
        "speedup_vs_sequential": {
            str(s["clients"]): round(s["images_per_s"] / sequential, 3) for s in settings if sequential
        },
    }
    if cfg.out is not None:
        atomic_write_text(cfg.out, json.dumps(report, indent=2) + "\n")
    return report
