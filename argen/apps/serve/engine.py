"""The serving engine: generators loaded once, a request's JSON checked into a `Job`, and one batch of jobs
sampled as one pipeline batch, without HTTP.

A request is checked by the checks `argen sample` runs (`GenerateConfig`, the model's family, the sampling
settings, `Pipeline.check_labels`); only what a request alone has (its fields, n against the batch size) is
checked here. Jobs that share a `BatchKey` (model, passes, CFG scale, streaming) can share a batch.

Exact batching: image i of a request is drawn from the random stream `sample_keys(seed, i)` and raster/EAR
images are decoded one by one (`GenerateConfig.decode_alone`), so the draws never depend on the batch. The
floats can: a matmul may sum a row in another order when the batch has another number of rows. On CPUs in
fp32 MKL's strict reproducibility mode (`exact_cpu_matmuls`) makes every row's sums independent of the
number of rows; `rows_independent` checks this at start and a model reports `batch_invariant` only where it
holds (raster/EAR, fp32 on this CPU). bf16 kernels and VAR (its decoder runs inside the sampler, with the
batch) can change a token where two are nearly tied.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import io
import os
import random
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from argen.device import dtype_name
from argen.models.checkpoints import read_meta
from argen.sampling.images import to_uint8
from argen.sampling.logits import sample_keys
from argen.sampling.pipeline import GenerateConfig, Pipeline
from argen.sampling.requests import whole

FIELDS = ("model", "class_label", "n", "seed", "passes", "cfg_scale")
VARIANTS = 64  # (model, passes, CFG) pipelines kept checked; a pipeline is cheap, the models are shared


def exact_cpu_matmuls() -> None:
    """Ask MKL for its strict reproducibility mode (fp32 matmul rows summed in an order that does not depend
    on the number of rows; no cost measured here). Must run before the process's first matmul."""
    os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")


@functools.cache
def rows_independent(device: str, dtype: torch.dtype) -> bool:
    """Whether `F.linear` gives the first m rows of a batch the same bits as a batch of those m rows alone,
    at layer shapes of the shipped models and batch sizes up to 1024 rows (measured: fp32 on MKL's default
    mode and bf16 on oneDNN do not; fp32 in strict mode does)."""
    g = torch.Generator().manual_seed(0)
    for out_features, in_features in ((384, 128), (128, 512), (1024, 1024)):
        w = torch.randn(out_features, in_features, generator=g).to(device, dtype)
        x = torch.randn(1024, in_features, generator=g).to(device, dtype)
        full = F.linear(x, w)
        if not all(torch.equal(F.linear(x[:m], w), full[:m]) for m in (1, 2, 3, 16, 58, 100, 290)):
            return False
    return True


@dataclass
class ServeConfig:
    """models: generators (shipped names or folders that record their tokenizer). host / port: where to
    listen (port 0: any free port). max_batch: images per batch; also the most one request may ask for.
    max_wait_ms: how long the oldest waiting request waits for others to fill its batch. queue: requests
    that may wait; one more gets 503. dtype: fp32 (exact batching on CPU), bf16 or auto. device: torch
    device. max_body_bytes: larger request bodies get 413. drain_s: on SIGTERM, how long requests in
    flight get to finish."""

    models: list[str] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 16
    max_wait_ms: float = 20.0
    queue: int = 256
    dtype: str = "fp32"
    device: str = "cpu"
    max_body_bytes: int = 65536
    drain_s: float = 60.0

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("give at least one --model (a shipped name such as ear_fmnist, or a folder)")
        if len(set(self.models)) != len(self.models):
            raise ValueError(f"a model is named twice in {self.models}")
        if not 0 <= self.port < 65536:
            raise ValueError(f"port must be in 0..65535 (0 = any free port), got {self.port}")
        for name in ("max_batch", "queue", "max_body_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.max_wait_ms < float("inf") or not 0 < self.drain_s < float("inf"):
            raise ValueError(f"need max_wait_ms >= 0 and drain_s > 0, got {self.max_wait_ms}, {self.drain_s}")
        GenerateConfig(model=self.models[0], dtype=self.dtype, device=self.device)  # its dtype check


class RequestError(ValueError):
    """A request the server refuses with `status` (400 malformed, 404 unknown model, 413 too large, 422)."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class BatchKey:
    model: str
    passes: int | None
    cfg_scale: float | None
    stream: bool


@dataclass(eq=False)  # a job is itself: the queue finds and removes it by identity
class Job:
    """One request: `n` images of class `label` drawn from the streams (seed, 0..n-1) by `pipe`.
    on_pass (streaming): called with (pass, passes, base64 PNGs of the images so far) while sampling."""

    key: BatchKey
    pipe: Pipeline
    label: int
    n: int
    seed: int
    passes: int
    warnings: list[str]
    on_pass: Callable[[int, int, list[str]], None] | None = None
    future: Future = field(default_factory=Future)
    arrived: float = field(default_factory=time.perf_counter)


@dataclass
class Batched:
    """A job's answer: its images as base64 PNGs, and the batch it ran in (requests, images, seconds)."""

    images: list[str]
    batch_requests: int
    batch_images: int
    batch_s: float


@dataclass
class Loaded:
    pipe: Pipeline
    meta: dict[str, Any]
    growth: bool  # raster/EAR: tokens first, then decoding (one image at a time; growth can stream)


def png_base64(img_CHW: torch.Tensor) -> str:
    """A (C, H, W) image in [0, 1] as a base64 PNG (grey images stay one channel)."""
    arr = to_uint8(img_CHW[None])[0]
    buf = io.BytesIO()
    Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


class Engine:
    """The models of a `ServeConfig`, loaded and warmed up once; `job` checks a request, `run` a batch."""

    def __init__(self, cfg: ServeConfig) -> None:
        self.cfg = cfg
        self.models = {name: self._load(name) for name in cfg.models}
        self._variants: OrderedDict[tuple, tuple[Pipeline, int, list[str]]] = OrderedDict()
        for name in self.models:  # the first request should not pay torch's first-call costs
            self.run([self.job({"model": name, "class_label": 0, "seed": 0})])

    def _load(self, name: str) -> Loaded:
        cfg = self.cfg
        pipe = Pipeline.load(
            GenerateConfig(model=name, device=cfg.device, dtype=cfg.dtype, batch_size=cfg.max_batch)
        )
        if pipe.tokenizer is None:
            raise ValueError(
                f"{name} records no tokenizer found here: serve shipped models or folders written by argen "
                "train (they record theirs)"
            )
        return Loaded(pipe, read_meta(name), growth=pipe.family.frames_name == "growth")

    def describe(self, name: str) -> dict[str, Any]:
        """What /v1/models says of a model."""
        loaded, (pipe, passes, _) = self.models[name], self._variant(name, None, None)
        model, param = pipe.model, next(pipe.model.parameters())
        kind = model.kind if model.kind != "gpt" else ("EAR" if model.config.mode == "next_any" else "raster")
        objective = (loaded.meta.get("trained_with") or {}).get("objective", {})
        return {
            "name": name,
            "kind": kind,
            "tokenizer": Path(pipe.cfg.tokenizer).name,
            "num_classes": pipe.num_classes,
            "passes": passes,
            "any_passes": kind == "EAR" and bool(objective.get("randomize")),
            "cfg_scale": pipe.sampling.cfg_scale,
            "dtype": dtype_name(param.dtype),
            "device": str(param.device),
            "batch_invariant": loaded.growth and rows_independent(str(param.device), param.dtype),
            "streaming": loaded.growth,
        }

    def _variant(self, name: str, passes: int | None, cfg_scale: float | None) -> tuple[Pipeline, int, list]:
        """The pipeline of (model, passes, CFG) over the loaded model, checked once: (pipeline, passes it
        runs, warnings its checks gave)."""
        key = (name, passes, cfg_scale)
        if key in self._variants:
            self._variants.move_to_end(key)
            return self._variants[key]
        loaded = self.models[name]
        sampling = {} if cfg_scale is None else {"cfg_scale": cfg_scale}
        settings = dataclasses.replace(
            loaded.pipe.cfg, schedule=passes, sampling=sampling, decode_alone=loaded.growth
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                pipe = Pipeline(
                    loaded.pipe.model,
                    loaded.pipe.tokenizer,
                    settings,
                    loaded.meta.get("trained_with"),
                    loaded.meta.get("sampling"),
                )
                steps = pipe.cost()["steps"]  # builds the schedule: refuses a pass count it cannot run
            except ValueError as e:
                raise ValueError(f"{e} (request: passes={passes}, cfg_scale={cfg_scale})") from e
        self._variants[key] = (pipe, steps, [str(w.message) for w in caught])
        if len(self._variants) > VARIANTS:
            self._variants.popitem(last=False)
        return self._variants[key]

    def _model_name(self, value: Any) -> str:
        if value is None:
            if len(self.models) == 1:
                return next(iter(self.models))
            raise ValueError(f"give model: this server runs {list(self.models)}")
        if not isinstance(value, str) or value not in self.models:
            raise RequestError(f"unknown model {value!r}; this server runs {list(self.models)}", 404)
        return value

    def job(self, body: Any, stream: bool = False) -> Job:
        """A request body (parsed JSON) -> a checked Job; ValueError (RequestError: with its status)."""
        if not isinstance(body, dict):
            raise RequestError('the body must be a JSON object such as {"class_label": 3}', 400)
        unknown = sorted(set(body) - set(FIELDS))
        if unknown:
            raise ValueError(f"unknown field(s) {unknown}; the fields are {list(FIELDS)}")
        name = self._model_name(body.get("model"))
        if "class_label" not in body:
            raise ValueError("give class_label, the class id of the images")
        label = whole(body["class_label"], "class_label")
        n = whole(body.get("n", 1), "n", lo=1)
        if n > self.cfg.max_batch:
            raise ValueError(f"n must be in 1..{self.cfg.max_batch} (the server's --max-batch), got {n}")
        seed = body.get("seed")
        seed = random.randrange(2**31) if seed is None else whole(seed, "seed")
        if seed >= 2**63:
            raise ValueError(f"seed must be below 2**63, got {seed}")
        passes = None if body.get("passes") is None else whole(body["passes"], "passes", lo=1)
        cfg_scale = body.get("cfg_scale")
        if cfg_scale is not None and (isinstance(cfg_scale, bool) or not isinstance(cfg_scale, int | float)):
            raise ValueError(f"cfg_scale must be a number (1 = off) or null, got {cfg_scale!r}")
        cfg_scale = None if cfg_scale is None else float(cfg_scale)
        if stream and not self.models[name].growth:
            raise ValueError(f"{name}: streaming shows the growth of raster/EAR models; use /v1/generate")
        pipe, steps, caught = self._variant(name, passes, cfg_scale)
        pipe.check_labels(torch.tensor([label]))
        return Job(BatchKey(name, passes, cfg_scale, stream), pipe, label, n, seed, steps, caught)

    def run(self, jobs: list[Job]) -> None:
        """Sample the images of jobs that share a BatchKey as one batch and answer each job's future."""
        pipe = jobs[0].pipe
        labels = torch.cat([torch.full((job.n,), job.label) for job in jobs])
        keys = torch.cat([sample_keys(job.seed, range(job.n)) for job in jobs])
        sizes = [job.n for job in jobs]

        def on_pass(i: int, passes: int, images: torch.Tensor) -> None:
            for job, part in zip(jobs, images.split(sizes), strict=True):
                if job.on_pass is not None:
                    job.on_pass(i + 1, passes, [png_base64(img) for img in part])

        stream = jobs[0].key.stream
        samples = pipe.sample(labels, keys_N=keys, on_pass=on_pass if stream else None)
        for job, part in zip(jobs, samples.images.split(sizes), strict=True):
            pngs = [png_base64(img) for img in part]
            job.future.set_result(Batched(pngs, len(jobs), len(labels), samples.seconds))
