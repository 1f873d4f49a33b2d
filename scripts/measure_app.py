"""Time `argen app`: start to its "serving on" line, then default sample requests through gradio_client.

python scripts/measure_app.py [--starts 3] [--requests 5] [--threads N]

The default request is the page's: any-schedule EAR, 8 passes, one image per class, with the growth GIF.
Needs the app extra (gradio_client comes with gradio).
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import time

from gradio_client import Client

DEFAULT_REQUEST = ("ear_any_fmnist", "", 1, 8, 2.0, 1.0, 0, True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--requests", type=int, default=5, help="per start")
    parser.add_argument("--threads", type=int, help="argen --threads (default: the app's one thread)")
    args = parser.parse_args()
    threads = ["--threads", str(args.threads)] if args.threads else []
    starts, requests = [], []
    for _ in range(args.starts):
        port = free_port()
        cmd = [sys.executable, "-m", "argen", *threads, "app", "--port", str(port)]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            for line in proc.stdout:
                if "serving on" in line:
                    break
            starts.append(time.perf_counter() - t0)
            client = Client(f"http://127.0.0.1:{port}/", verbose=False)
            for _ in range(args.requests):
                t0 = time.perf_counter()
                client.predict(*DEFAULT_REQUEST, api_name="/on_sample")
                requests.append(time.perf_counter() - t0)
        finally:
            proc.terminate()
            proc.wait()
    print(f"start_s {[round(s, 2) for s in starts]} median {statistics.median(starts):.2f}")
    print(f"request_s {[round(r, 2) for r in requests]} median {statistics.median(requests):.2f}")


if __name__ == "__main__":
    main()
