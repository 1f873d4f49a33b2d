"""`argen serve`: the HTTP API over the engine and the scheduler (FastAPI on uvicorn; the serve extra).

GET /health, GET /v1/models, POST /v1/generate (JSON -> base64 PNGs), POST /v1/generate/stream (server-sent
events: the images after every pass, then the answer /v1/generate gives). Errors are JSON {"error": message}
with a 4xx status (503 + Retry-After when the queue is full); a client that leaves before its batch starts
gives its place back; on SIGTERM the server stops accepting, answers what it holds, then exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from argen.apps.serve.engine import Batched, Engine, Job, RequestError, ServeConfig
from argen.apps.serve.scheduler import QueueFull, Scheduler


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _body(request: Request, limit: int) -> Any:
    """The request's JSON, read up to `limit` bytes (RequestError 413 beyond, 400 when it is not JSON)."""
    if int(request.headers.get("content-length") or 0) > limit:
        raise RequestError(f"the body is larger than {limit} bytes", 413)
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise RequestError(f"the body is larger than {limit} bytes", 413)
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RequestError(f'the body is not JSON ({e}); send e.g. {{"class_label": 3}}', 400) from e


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone (the body is read: the next message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _answer(job: Job, done: Batched) -> dict[str, Any]:
    return {
        "model": job.key.model,
        "class_label": job.label,
        "seed": job.seed,
        "passes": job.passes,
        "cfg_scale": job.pipe.sampling.cfg_scale,
        "images": done.images,
        "seconds": round(time.perf_counter() - job.arrived, 4),
        "batch": {"requests": done.batch_requests, "images": done.batch_images, "seconds": done.batch_s},
        "warnings": job.warnings,
    }


def create_app(engine: Engine, scheduler: Scheduler) -> FastAPI:
    """The API over a loaded engine; the scheduler starts and stops with the app (its lifespan)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        scheduler.start()
        yield
        scheduler.stop()  # after uvicorn has let the requests in flight finish

    app = FastAPI(title="argen", lifespan=lifespan)
    limit = engine.cfg.max_body_bytes

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> JSONResponse:
        return _error(e.status_code, str(e.detail), e.headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, e: Exception) -> JSONResponse:
        return _error(500, f"internal error: {type(e).__name__}: {e}")

    async def submit(request: Request, stream: bool) -> tuple[Job, asyncio.Queue | None]:
        """Read and check a request and queue its job; raises RequestError / ValueError / QueueFull."""
        job = engine.job(await _body(request, limit), stream=stream)
        events: asyncio.Queue | None = None
        if stream:
            events, loop = asyncio.Queue(), asyncio.get_running_loop()
            job.on_pass = lambda i, n, images: loop.call_soon_threadsafe(
                events.put_nowait, ("pass", {"pass": i, "passes": n, "images": images})
            )
        scheduler.submit(job)
        return job, events

    def refused(e: Exception) -> JSONResponse:
        if isinstance(e, QueueFull):
            return _error(503, str(e), {"Retry-After": str(e.retry_after_s)})
        return _error(getattr(e, "status", 422), str(e))

    @app.get("/health")
    async def health() -> dict[str, Any]:
        c = scheduler.counters
        return {
            "status": "ok",
            "models": list(engine.models),
            "waiting": scheduler.waiting,
            "running": c.running,
            "answered": c.answered,
            "cancelled": c.cancelled,
            "batches": c.batches,
            "images": c.images,
            "batch_images": {str(k): v for k, v in sorted(c.batch_sizes.items())},
        }

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"models": [engine.describe(name) for name in engine.models]}

    @app.post("/v1/generate")
    async def generate(request: Request) -> JSONResponse:
        try:
            job, _ = await submit(request, stream=False)
        except (ValueError, QueueFull) as e:
            return refused(e)
        answer = asyncio.wrap_future(job.future)
        gone = asyncio.create_task(_disconnected(request))
        try:
            await asyncio.wait({answer, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if not answer.done():  # the client left: give its place back (a batch that started runs to its end)
            scheduler.cancel(job)
            return _error(499, "the client closed the connection")
        return JSONResponse(_answer(job, answer.result()))

    @app.post("/v1/generate/stream")
    async def generate_stream(request: Request) -> Any:
        try:
            job, events = await submit(request, stream=True)
        except (ValueError, QueueFull) as e:
            return refused(e)
        answer = asyncio.wrap_future(job.future)
        answer.add_done_callback(lambda _: events.put_nowait(("done", None)))

        async def sse() -> AsyncIterator[str]:
            try:
                while True:
                    kind, data = await events.get()
                    if kind == "done":
                        break
                    yield f"event: {kind}\ndata: {json.dumps(data)}\n\n"
                if answer.exception() is not None:
                    yield f"event: error\ndata: {json.dumps({'error': str(answer.exception())})}\n\n"
                else:
                    yield f"event: done\ndata: {json.dumps(_answer(job, answer.result()))}\n\n"
            finally:  # the client left (starlette cancels this generator): give its place back
                scheduler.cancel(job)

        return StreamingResponse(sse(), media_type="text/event-stream")

    return app


class _Server(uvicorn.Server):
    """uvicorn, announcing the address once it listens (port 0 picks a free one)."""

    def __init__(self, config: uvicorn.Config, ready: Callable[[str], None]) -> None:
        super().__init__(config)
        self.ready = ready

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        if self.started:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            self.ready(f"http://{host}:{port}")


def serve(cfg: ServeConfig, ready: Callable[[str], None]) -> Scheduler:
    """Load the models, serve until SIGTERM / Ctrl+C (requests in flight are answered first, for up to
    `cfg.drain_s`), and return the scheduler (its counters say what was served)."""
    engine = Engine(cfg)
    scheduler = Scheduler(engine.run, cfg.max_batch, cfg.max_wait_ms / 1000, cfg.queue)
    config = uvicorn.Config(
        create_app(engine, scheduler),
        host=cfg.host,
        port=cfg.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=cfg.drain_s,
    )
    # uvicorn drains on SIGTERM, then raises the signal again under the handler it found: this one lets the
    # command end normally (exit 0) instead of being killed by the default handler
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        _Server(config, ready).run()
    finally:
        signal.signal(signal.SIGTERM, previous)
    return scheduler
