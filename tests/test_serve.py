"""`argen serve`: real servers on free loopback ports (the shipped EAR and VAR, one thread): every endpoint,
every refused input, byte-equal images alone and batched, a full queue, a client that leaves, SIGTERM
draining, the benchmark; and the batching scheduler on its own."""

from __future__ import annotations

import base64
import http.client
import io
import json
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import pytest
from PIL import Image

from argen.apps.serve.scheduler import QueueFull, Scheduler
from argen.cli import main
from argen.eval.serve_bench import ServeBenchConfig, ServerProcess, run_serve_bench

EAR = {"model": "ear_fmnist"}
SLOW = {"model": "ear_fmnist", "n": 2, "passes": 96}  # a second a batch or so: time to act while it runs


def _server(*args: str) -> ServerProcess:
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    return ServerProcess(["--port", "0", *args], threads=1)


@pytest.fixture(scope="module")
def server() -> Any:
    """ear_fmnist + var_fmnist; a request waits up to 200 ms for company, so concurrent ones share a batch."""
    proc = _server("--model", "ear_fmnist", "--model", "var_fmnist", "--max-wait-ms", "200")
    yield proc
    assert proc.stop() == 0


def _call(
    url: str, method: str, path: str, body: Any = None, raw: bytes | None = None
) -> tuple[int, Any, Any]:
    """(status, JSON answer, headers) of one request on a connection of its own."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    try:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        conn.request(method, path, data)
        response = conn.getresponse()
        return response.status, json.loads(response.read()), response.headers
    finally:
        conn.close()


def _generate(url: str, **body: Any) -> dict[str, Any]:
    status, answer, _ = _call(url, "POST", "/v1/generate", body)
    assert status == 200, answer
    return answer


def _in_thread(fn: Any) -> tuple[threading.Thread, dict[str, Any]]:
    """Run `fn()` in a thread: (the thread, {"result": what fn returned} once it has)."""
    out: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: out.setdefault("result", fn()), daemon=True)
    thread.start()
    return thread, out


def _wait_for(url: str, done: Any, timeout: float = 60.0) -> dict[str, Any]:
    """Poll /health until `done(health)`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        health = _call(url, "GET", "/health")[1]
        if done(health):
            return health
        time.sleep(0.02)
    raise AssertionError(f"the server never reached the state; last /health: {health}")


def test_health_and_models(server: ServerProcess) -> None:
    status, health, _ = _call(server.url, "GET", "/health")
    assert status == 200 and health["status"] == "ok" and health["models"] == ["ear_fmnist", "var_fmnist"]
    status, listing, _ = _call(server.url, "GET", "/v1/models")
    ear, var = listing["models"]
    assert status == 200
    assert ear == {"name": "ear_fmnist", "kind": "EAR", "tokenizer": "vq2_fmnist", "num_classes": 10,
                   "passes": 31, "any_passes": False, "cfg_scale": 2.5, "dtype": "fp32", "device": "cpu",
                   "batch_invariant": True, "streaming": True}  # fmt: skip
    assert (var["kind"], var["tokenizer"], var["passes"], var["cfg_scale"]) == (
        "var",
        "msvq2_fmnist",
        10,
        3.5,
    )
    assert not var["batch_invariant"] and not var["streaming"]


def test_generate_returns_pngs_and_what_ran(server: ServerProcess) -> None:
    answer = _generate(server.url, **EAR, class_label=3, n=2, seed=5, cfg_scale=3.0)
    images = [Image.open(io.BytesIO(base64.b64decode(b))) for b in answer["images"]]
    assert [(im.size, im.mode) for im in images] == [((32, 32), "L")] * 2
    assert images[0].tobytes() != images[1].tobytes()  # two draws, not one image twice
    assert (answer["seed"], answer["passes"], answer["cfg_scale"], answer["warnings"]) == (5, 31, 3.0, [])
    assert answer["seconds"] > 0 and answer["batch"]["images"] >= 2
    var = _generate(server.url, model="var_fmnist", class_label=1)  # no seed: the server picks one
    assert var["passes"] == 10 and isinstance(var["seed"], int) and len(var["images"]) == 1
    fixed = _generate(server.url, **EAR, class_label=3, passes=8)
    assert fixed["passes"] == 8 and "trained on the 'sides' schedule only" in fixed["warnings"][0]


def test_images_alone_equal_images_batched_with_others(server: ServerProcess) -> None:
    request = {**EAR, "class_label": 4, "n": 3, "seed": 11}
    alone = _generate(server.url, **request)
    assert alone["batch"] == {**alone["batch"], "requests": 1, "images": 3}
    others = [{**EAR, "class_label": i, "n": 1 + i % 3, "seed": 100 + i} for i in range(5)]
    runs = [_in_thread(lambda b=b: _generate(server.url, **b)) for b in [request, *others]]
    for thread, _ in runs:
        thread.join(120)
    batched = runs[0][1]["result"]
    assert batched["batch"]["requests"] > 1  # it did share its batch
    assert batched["images"] == alone["images"]  # byte for byte
    first = _generate(server.url, **{**request, "n": 1})
    assert first["images"] == alone["images"][:1]  # image i depends on (seed, i), not on n
    assert _generate(server.url, **{**request, "seed": 12})["images"] != alone["images"]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"model": "nope", "class_label": 1}, 404, "unknown model 'nope'"),
        ({"class_label": 1}, 422, "give model"),
        ({**EAR}, 422, "give class_label"),
        ({**EAR, "class_label": 10}, 422, "out of range: this model has classes 0..9"),
        ({**EAR, "class_label": "3"}, 422, "class_label must be a whole number"),
        ({**EAR, "class_label": 1, "n": 0}, 422, "n must be a whole number >= 1"),
        ({**EAR, "class_label": 1, "n": 17}, 422, "n must be in 1..16"),
        ({**EAR, "class_label": 1, "passes": 0}, 422, "passes must be a whole number >= 1"),
        ({**EAR, "class_label": 1, "passes": 257}, 422, "number of steps must be in [1, 256]"),
        ({"model": "var_fmnist", "class_label": 1, "passes": 8}, 422, "applies to raster/EAR models"),
        ({**EAR, "class_label": 1, "cfg_scale": -1}, 422, "guidance scale (CFG) must be >= 0"),
        ({**EAR, "class_label": 1, "cfg_scale": "2"}, 422, "cfg_scale must be a number"),
        ({**EAR, "class_label": 1, "colour": 1}, 422, "unknown field(s) ['colour']"),
        ([1, 2], 400, "must be a JSON object"),
        (b"{not json", 400, "the body is not JSON"),
        (b'{"class_label": 1, "pad": "' + b"x" * 70000 + b'"}', 413, "larger than 65536 bytes"),
    ],
)
def test_bad_requests_get_4xx_json_and_the_server_keeps_serving(server, body, status, message) -> None:
    raw = body if isinstance(body, bytes) else None
    got, answer, _ = _call(server.url, "POST", "/v1/generate", None if raw else body, raw)
    assert got == status and message in answer["error"], answer
    assert _call(server.url, "GET", "/health")[0] == 200


def test_unknown_routes_and_methods_are_json(server: ServerProcess) -> None:
    assert _call(server.url, "GET", "/v2/nothing")[:2] == (404, {"error": "Not Found"})
    assert _call(server.url, "GET", "/v1/generate")[:2] == (405, {"error": "Method Not Allowed"})


def _events(url: str, body: dict[str, Any]) -> list[tuple[str, Any]]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    conn.request("POST", "/v1/generate/stream", json.dumps(body))
    response = conn.getresponse()
    assert response.status == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = []
    for block in response.read().decode().split("\n\n"):
        if block.strip():
            kind, data = block.split("\n")
            events.append((kind.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    conn.close()
    return events


def test_stream_sends_every_pass_then_the_same_answer(server: ServerProcess) -> None:
    request = {**EAR, "class_label": 7, "n": 2, "seed": 3}
    events = _events(server.url, request)
    passes = [data for kind, data in events if kind == "pass"]
    assert [p["pass"] for p in passes] == list(range(1, 32)) and {p["passes"] for p in passes} == {31}
    assert all(len(p["images"]) == 2 for p in passes)
    kind, done = events[-1]
    assert kind == "done" and done["images"] == _generate(server.url, **request)["images"]
    assert passes[0]["images"] != passes[-1]["images"]  # the first pass shows one token on grey
    status, answer, _ = _call(
        server.url, "POST", "/v1/generate/stream", {"model": "var_fmnist", "class_label": 1}
    )
    assert status == 422 and "growth of raster/EAR models" in answer["error"]


def test_serve_bench_reports_every_setting(server: ServerProcess, tmp_path) -> None:
    out = tmp_path / "bench.json"
    cfg = ServeBenchConfig(clients=(1, 3), requests=4, rounds=2, url=server.url, out=str(out))
    report = run_serve_bench(cfg)
    assert json.loads(out.read_text()) == report
    for setting in report["settings"]:
        assert (setting["ok"], setting["errors"], setting["lost"], setting["unsent"]) == (4, {}, 0, 0)
        assert setting["images_differing_from_sequential"] == 0 and setting["latency_s"]["p95"] > 0
    assert (
        set(report["speedup_vs_sequential"]) == {"1", "3"}
        and report["server"]["exit_code_after_sigterm"] is None
    )


def test_full_queue_503_a_client_that_leaves_frees_its_place_and_sigterm_drains() -> None:
    proc = _server("--model", "ear_fmnist", "--max-batch", "2", "--queue", "1", "--max-wait-ms", "0")
    url = proc.url
    try:
        first, first_out = _in_thread(lambda: _generate(url, **SLOW, class_label=0))
        _wait_for(url, lambda h: h["running"] == 1)
        host, port = url.removeprefix("http://").split(":")
        leaving = http.client.HTTPConnection(host, int(port), timeout=60)
        leaving.request("POST", "/v1/generate", json.dumps({**SLOW, "class_label": 1}))
        _wait_for(url, lambda h: h["waiting"] == 1)
        status, answer, headers = _call(url, "POST", "/v1/generate", {**SLOW, "class_label": 2})
        assert status == 503 and "queue is full" in answer["error"] and int(headers["Retry-After"]) >= 1
        leaving.close()  # its client leaves before its batch starts: the place is given back
        health = _wait_for(url, lambda h: h["waiting"] == 0)
        assert health["cancelled"] == 1 and health["running"] == 1
        taken, taken_out = _in_thread(lambda: _generate(url, **SLOW, class_label=3))  # accepted now
        first.join(120)
        taken.join(120)
        assert first_out["result"]["class_label"] == 0 and taken_out["result"]["class_label"] == 3
        # SIGTERM with one request running and one waiting: both are answered, then the server exits 0
        running, running_out = _in_thread(lambda: _generate(url, **SLOW, class_label=4))
        _wait_for(url, lambda h: h["running"] == 1)
        waiting, waiting_out = _in_thread(lambda: _generate(url, **SLOW, class_label=5))
        _wait_for(url, lambda h: h["waiting"] == 1)
        assert proc.stop() == 0
        running.join(120)
        waiting.join(120)
        assert running_out["result"]["class_label"] == 4 and waiting_out["result"]["class_label"] == 5
        assert "answered 4 requests" in proc.lines[-1]
        with pytest.raises(ConnectionRefusedError):
            _call(url, "GET", "/health")
    finally:
        proc.stop()


def test_cli_refuses_a_model_it_cannot_load(capsys, monkeypatch) -> None:
    # `argen serve` sets MKL_CBWR for its own process; run in-process, it must not leak to later tests'
    # subprocesses (their fp32 matmuls would then sum differently from this process's)
    monkeypatch.setenv("MKL_CBWR", "AUTO")
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--model", "no_such_model", "--port", "0"])
    assert exc.value.code == 2 and "argen serve: error:" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- the scheduler
@dataclass(eq=False)
class _Job:
    key: str
    n: int
    arrived: float = field(default_factory=time.perf_counter)
    future: Future = field(default_factory=Future)


def test_scheduler_batches_the_oldest_key_up_to_max_batch_and_bounds_the_queue() -> None:
    batches: list[list[tuple[str, int]]] = []

    def run(jobs: list[_Job]) -> None:
        batches.append([(j.key, j.n) for j in jobs])
        for j in jobs:
            j.future.set_result(len(jobs))

    scheduler = Scheduler(run, max_batch=4, max_wait_s=0.05, queue=6)
    jobs = [_Job("a", 2), _Job("b", 1), _Job("a", 1), _Job("a", 2), _Job("b", 3), _Job("a", 1)]
    for job in jobs:
        scheduler.submit(job)
    with pytest.raises(QueueFull):
        scheduler.submit(_Job("a", 1))
    assert scheduler.cancel(jobs[5]) and jobs[5].future.cancelled()
    scheduler.start()
    for job in jobs[:5]:
        job.future.result(10)
    scheduler.stop()
    # oldest first; a job that does not fit waits for the next batch of its key; keys never mix
    assert batches == [[("a", 2), ("a", 1)], [("b", 1), ("b", 3)], [("a", 2)]]
    c = scheduler.counters
    assert (c.answered, c.cancelled, c.batches, c.images, c.batch_sizes) == (5, 1, 3, 9, {3: 1, 4: 1, 2: 1})


# ------------------------------------------------------------------- what the server asks of the pipeline
def test_pipeline_takes_per_image_keys_decodes_alone_and_reports_each_pass(files: dict) -> None:
    import torch

    from argen.sampling.logits import sample_keys
    from argen.sampling.pipeline import GenerateConfig, Pipeline

    def pipe(model: str, tokenizer: str, **settings: Any) -> Pipeline:
        return Pipeline.load(GenerateConfig(model=str(files[model]), tokenizer=str(files[tokenizer]),
                                            device="cpu", dtype="fp32", **settings))  # fmt: skip

    ear, labels = pipe("ear", "vq", schedule=4), torch.tensor([1, 2, 3])
    by_seed = ear.sample(labels, seed=7, indices_N=torch.tensor([4, 0, 9]))
    mixed = torch.cat([sample_keys(7, [4, 0]), sample_keys(7, [9])])  # what a batch of two requests holds
    assert torch.equal(ear.sample(labels, keys_N=mixed).images, by_seed.images)
    passes: list[tuple[int, int, torch.Tensor]] = []
    alone = pipe("ear", "vq", schedule=4, decode_alone=True)
    out = alone.sample(labels, seed=7, indices_N=torch.tensor([4, 0, 9]), on_pass=lambda *a: passes.append(a))
    one_by_one = [
        alone.sample(labels[i : i + 1], seed=7, indices_N=torch.tensor([j])) for i, j in enumerate([4, 0, 9])
    ]
    assert torch.equal(out.images, torch.cat([o.images for o in one_by_one]))  # each decoded as if alone
    assert [(i, n, tuple(im.shape)) for i, n, im in passes] == [(i, 4, (3, 1, 32, 32)) for i in range(4)]
    assert (passes[0][2] == 0.5).float().mean() > 0.5  # after one pass most of the canvas is still grey
    var = pipe("var", "msvq")
    with pytest.raises(ValueError, match="pass-by-pass images are for raster/EAR"):
        var.sample(labels, on_pass=lambda *a: None)
    with pytest.raises(ValueError, match="decode_alone applies to raster/EAR models"):
        pipe("var", "msvq", decode_alone=True)
