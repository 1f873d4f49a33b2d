"""What the app runs, without the web page: models loaded once, and requests that return images + numbers.

Page values become the CLI's requests (`SampleRequest`, `ExtendRequest`), run by `Pipeline.load` over the
cached models: the same checks and messages as `argen sample` / `argen extend`, the same defaults (the
model's own), the same images for the same inputs and seed. Each request writes its images to a fresh
temporary folder; inputs it cannot run are a ValueError saying what to do, shown by the page.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from argen.apps.extend import extend_images
from argen.device import DTYPES, dtype_name, resolve_dtype
from argen.distributed import resolve_device
from argen.models.checkpoints import ASSETS, load_model, read_meta, tokenizer_fingerprint
from argen.sampling.families import family_of
from argen.sampling.images import save_gif, save_grid, save_strip
from argen.sampling.pipeline import GenerateConfig, Pipeline, model_sampling_defaults
from argen.sampling.requests import ExtendRequest, SampleRequest, parse_ids, whole

GENERATORS, TOKENIZERS = ("gpt", "var", "actvar"), ("vq", "msvq")
DEFAULT_MODEL = "ear_any_fmnist"
KEEP = 16  # request folders kept on disk
Progress = Callable[[float, str], None]


@dataclass
class AppConfig:
    """host / port: where the page is served (127.0.0.1 = this machine only). models / tokenizers: local
    model files or folders offered beside the shipped ones; a generator samples with the tokenizer whose
    codebook it was trained with. device: torch device. dtype: the models' dtype, "auto" (bf16 where the
    device's bf16 matmuls beat fp32), "bf16" or "fp32". batch_size: images per forward batch (progress is
    reported per batch). max_images: the most images one request may ask for. preload: load every model at
    start (else on first use)."""

    host: str = "127.0.0.1"
    port: int = 7860
    models: list[str] = field(default_factory=list)
    tokenizers: list[str] = field(default_factory=list)
    device: str = "cpu"
    dtype: str = "auto"
    batch_size: int = 32
    max_images: int = 160
    preload: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.port < 65536:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if self.batch_size < 1 or self.max_images < 1:
            raise ValueError(
                f"batch_size and max_images must be >= 1, got {self.batch_size} and {self.max_images}"
            )


@dataclass
class SampleResult:
    """grid: PNG of the images (one column per class). frames: EAR growth GIF or VAR scale strip (PNG), or
    None. stats: what ran (model, images, passes, GFLOPs per image, seconds, sampling settings, dtype and
    device). warnings: what the pipeline warned about (e.g. a schedule the model was not trained on)."""

    grid: str
    frames: str | None
    stats: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


class ModelStore:
    """The shipped models plus the configured local ones, each loaded once on first use (or at start)."""

    def __init__(self, cfg: AppConfig) -> None:
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.dtype = dtype_name(resolve_dtype(cfg.dtype, self.device))  # what "auto" is on this device
        self.paths: dict[str, str] = {}
        self.meta: dict[str, dict[str, Any]] = {}
        for path in sorted(ASSETS.glob("*/config.json")):  # shipped models, by name (as the CLI takes them)
            self._add(path.parent.name, path.parent.name)
        for path in [*cfg.models, *cfg.tokenizers]:
            self._add(path, path)
        self._loaded: dict[str, nn.Module] = {}
        self._outputs, self._requests = Path(tempfile.mkdtemp(prefix="argen_app_")), 0
        self.generators = [n for n, m in self.meta.items() if m["kind"] in GENERATORS]
        self.tokenizers = [n for n, m in self.meta.items() if m["kind"] in TOKENIZERS]
        for name in cfg.models:
            if self.meta[name]["kind"] not in GENERATORS:
                raise ValueError(f"--model {name} is a {self.meta[name]['kind']} model, not a generator")
        if cfg.preload:
            for name in [*self.generators, *self.tokenizers]:
                self.model(name)

    def _add(self, name: str, path: str) -> None:
        self.paths[name], self.meta[name] = path, read_meta(path)

    @property
    def default(self) -> str:
        return DEFAULT_MODEL if DEFAULT_MODEL in self.generators else self.generators[0]

    def output_folder(self) -> Path:
        """A fresh folder for one request's images; folders of all but the last KEEP requests are deleted
        (the page has its own copies by then), so a long-running app does not fill the disk."""
        self._requests += 1
        folder = self._outputs / f"{self._requests:08d}"
        folder.mkdir()
        for old in sorted(self._outputs.iterdir())[:-KEEP]:
            shutil.rmtree(old, ignore_errors=True)
        return folder

    def check_generator(self, name: str) -> None:
        if name not in self.generators:
            raise ValueError(f"unknown model {name!r}; pick one of {self.generators}")

    def model(self, name: str) -> nn.Module:
        if name not in self.paths:
            raise ValueError(f"unknown model {name!r}; pick one of {self.generators}")
        return self._load(self.paths[name])

    def _load(self, path: str) -> nn.Module:
        """A model file loaded once, on the app's device in its dtype (every `Pipeline.load`'s loader)."""
        if path not in self._loaded:
            self._loaded[path] = load_model(path, self.device, DTYPES[self.dtype])
        return self._loaded[path]

    def is_ear(self, name: str) -> bool:
        config = self.meta[name]["config"]
        return self.meta[name]["kind"] == "gpt" and config.get("order") == "spiral"

    def describe_one(self, name: str) -> str:
        """What the model is: EAR, raster, var, actvar, vq, ..."""
        kind = self.meta[name]["kind"]
        return kind if kind != "gpt" else ("EAR" if self.is_ear(name) else "raster")

    def defaults(self, name: str) -> tuple[int, float, float]:
        """(passes, CFG scale, temperature) the page starts with: 8 passes for any-schedule EAR models, else 0
        (the model's own); the CFG scale and temperature the model samples with, as `argen sample` does."""
        self.check_generator(name)
        objective = (self.meta[name].get("trained_with") or {}).get("objective", {})
        passes = 8 if self.is_ear(name) and objective.get("randomize") else 0
        family = family_of(self.model(name), name).default_sampling
        own = model_sampling_defaults(family, self.meta[name].get("sampling"), name)
        return passes, own.cfg_scale, own.temperature

    def warm_up(self) -> None:
        """One small request, so the first real one does not pay torch's first-call costs."""
        sample(self, self.default, "0", 1, self.defaults(self.default)[0])

    def tokenizer_for(self, name: str) -> str:
        """The tokenizer with the codebook `name` was trained with (or the only one of its kind)."""
        kind = family_of(self.model(name), name).tokenizer_kind
        recorded = (self.meta[name].get("trained_with") or {}).get("tokenizer", {}).get("fingerprint")
        candidates = [t for t in self.tokenizers if self.meta[t]["kind"] == kind]
        if recorded:
            candidates = [t for t in candidates if tokenizer_fingerprint(self.model(t)) == recorded]
        if len(candidates) != 1:
            raise ValueError(
                f"{len(candidates)} {kind} tokenizers fit {name}: start the app with --tokenizer FILE "
                "(the tokenizer it was trained with)"
            )
        return candidates[0]

    def generate_config(self, name: str, **settings: Any) -> GenerateConfig:
        """How the app runs generator `name`: with its tokenizer, on the app's device, dtype and batch size;
        `settings`: the request's (schedule, sampling overrides)."""
        self.check_generator(name)
        return GenerateConfig(
            model=self.paths[name],
            tokenizer=self.paths[self.tokenizer_for(name)],
            batch_size=self.cfg.batch_size,
            device=str(self.device),
            dtype=self.dtype,
            **settings,
        )

    def pipeline(self, cfg: GenerateConfig) -> Pipeline:
        """`Pipeline.load(cfg)` over the cached models."""
        return Pipeline.load(cfg, loader=self._load)

    def check_size(self, images: int) -> None:
        if images > self.cfg.max_images:
            raise ValueError(
                f"{images} images asked; this app makes at most {self.cfg.max_images} per request: "
                "ask for fewer classes or images"
            )


def _noop(fraction: float, desc: str) -> None:
    pass


def _sampling(**values: float | None) -> dict[str, float]:
    """The sampling overrides a page gave; an empty box (None) is the model's own value."""
    return {k: v for k, v in values.items() if v is not None}


def sample(
    store: ModelStore,
    name: str,
    classes: str = "",
    per_class: float = 1,
    passes: float | None = None,
    cfg_scale: float | None = None,
    temperature: float | None = None,
    seed: float | None = 0,
    frames: bool = True,
    progress: Progress = _noop,
) -> SampleResult:
    """The Sample tab: page values -> `SampleRequest` -> `run_sample`. classes: comma-separated ids ("" =
    all). passes: EAR models only; None or 0 = the model's own. Empty boxes (None): the model's own."""
    passes = None if passes is None else whole(passes, "passes") or None
    seed = None if seed is None else whole(seed, "seed", lo=None)
    sampling = _sampling(cfg_scale=cfg_scale, temperature=temperature, seed=seed)
    generate = store.generate_config(name, schedule=passes, sampling=sampling)
    request = SampleRequest(generate, parse_ids(classes, "classes"), per_class)
    return run_sample(store, request, frames, progress)


def run_sample(
    store: ModelStore, request: SampleRequest, frames: bool = True, progress: Progress = _noop
) -> SampleResult:
    """Class-conditional images (one column per class; image i of `argen sample` for the same request) and,
    when asked, the growth GIF (EAR/raster) or scale strip (VAR/ActVAR) of the first image of each class.

    The images are `argen sample`'s batches with their rows reordered (draw j of every class before draw
    j + 1): each image keeps its stream (seed, i) and each batch its size, so the pixels are the same."""
    t0 = time.perf_counter()
    progress(0.0, "preparing the model")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipe = store.pipeline(request.generate)
    labels = torch.tensor(request.labels(pipe.num_classes))
    store.check_size(len(labels))
    columns = len(labels) // request.per_class
    # the request's order is class-major (a row per class in `argen sample`); a column per class here
    index_N = torch.arange(len(labels)).view(columns, request.per_class).t().flatten()

    def tick(done: int, total: int) -> None:
        progress(done / total, f"sampled {done} of {total} images")

    out = pipe.sample(labels[index_N], frames=frames, indices_N=index_N, progress=tick)
    progress(1.0, "writing images")
    folder = store.output_folder()
    grid = save_grid(out.images, folder / "samples.png", nrow=columns, scale=3)
    animation, shots = None, [f[:columns] for f in out.frames]  # one row: the first image of each class
    if shots and pipe.family.frames_name == "growth":
        animation = save_gif(shots, folder / "growth.gif", nrow=columns, scale=3, duration_ms=60)
    elif shots:
        animation = save_strip(shots, folder / "scales.png", rows=min(4, columns), scale=3)
    stats = {
        "model": request.generate.model,
        "images": len(labels),
        "passes": out.passes,
        "gflops_per_image": round(pipe.cost()["gflops"], 4),
        "sampling_s": round(out.seconds, 3),
        "images_per_s": round(len(labels) / out.seconds, 1),
        "request_s": round(time.perf_counter() - t0, 3),
        "seed": pipe.sampling.seed,
        "cfg_scale": pipe.sampling.cfg_scale,
        "temperature": pipe.sampling.temperature,
        "dtype": store.dtype,
        "device": str(store.device),
    }
    return SampleResult(
        str(grid), str(animation) if animation else None, stats, [str(w.message) for w in caught]
    )


def compare(
    store: ModelStore,
    left: str,
    right: str,
    classes: str = "",
    per_class: float = 1,
    seed: float | None = 0,
    progress: Progress = _noop,
) -> tuple[SampleResult, SampleResult]:
    """Two models on the same classes and seed, each at the settings the page starts it with (any-schedule
    EAR: 8 passes; otherwise its own steps) and its own sampling settings."""

    def run(name: str) -> SampleResult:
        passes = store.defaults(name)[0]
        return sample(store, name, classes, per_class, passes, None, None, seed, False, progress)

    return run(left), run(right)


def extend(
    store: ModelStore,
    name: str,
    images: str = "0,1,2,3",
    centre: float = 8,
    canvas: float | None = 20,
    cfg_scale: float | None = None,
    seed: float | None = 0,
) -> tuple[str, dict[str, Any]]:
    """The Extend tab: page values -> `ExtendRequest` -> `run_extend`. images: comma-separated test-set
    indices. Empty boxes (None): the model's own value."""
    seed = None if seed is None else whole(seed, "seed", lo=None)
    generate = store.generate_config(name, sampling=_sampling(cfg_scale=cfg_scale, seed=seed))
    indices = parse_ids(images, "images (test-set indices)") or []
    return run_extend(store, ExtendRequest(generate, centre, canvas, indices))


def run_extend(store: ModelStore, request: ExtendRequest) -> tuple[str, dict[str, Any]]:
    """EAR: keep the centre tokens of Fashion-MNIST test images and continue the spiral outward (the
    picture `argen extend` writes for the same request) -> (image path, report)."""
    store.check_size(len(request.images))
    t0 = time.perf_counter()
    report = extend_images(request, store.output_folder(), pipe=store.pipeline(request.generate))
    report.update(request_s=round(time.perf_counter() - t0, 3), device=str(store.device))
    return report.pop("image"), report


def describe(store: ModelStore, names: Iterable[str]) -> list[tuple[str, str]]:
    """Dropdown choices: (label, name), the label saying what the model is (EAR, raster, var, ...)."""
    return [(f"{name} ({store.describe_one(name)})", name) for name in names]
