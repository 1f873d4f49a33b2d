"""What the app runs, without the web page: models loaded once, and requests that return images + numbers.

Every request builds a cheap `Pipeline` over the cached models, writes its images to a fresh temporary folder
and raises ValueError (with what to do) for inputs it cannot run, so the page can show the message.
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

from argen.distributed import resolve_device
from argen.models.checkpoints import ASSETS, load_model, read_meta, tokenizer_fingerprint
from argen.sampling.families import family_of
from argen.sampling.images import save_gif, save_grid, save_strip
from argen.sampling.pipeline import GenerateConfig, Pipeline, model_sampling_defaults

GENERATORS, TOKENIZERS = ("gpt", "var", "actvar"), ("vq", "msvq")
DEFAULT_MODEL = "ear_any_fmnist"
KEEP = 16  # request folders kept on disk
Progress = Callable[[float, str], None]


@dataclass
class AppConfig:
    """host / port: where the page is served (127.0.0.1 = this machine only). models / tokenizers: local
    model files or folders offered beside the shipped ones; a generator samples with the tokenizer whose
    codebook it was trained with. device: torch device. batch_size: images per forward batch (progress
    is reported per batch). preload: load every model at start (else on first use)."""

    host: str = "127.0.0.1"
    port: int = 7860
    models: list[str] = field(default_factory=list)
    tokenizers: list[str] = field(default_factory=list)
    device: str = "cpu"
    batch_size: int = 32
    preload: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.port < 65536:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


@dataclass
class SampleResult:
    """grid: PNG of the images (one column per class). frames: EAR growth GIF or VAR scale strip (PNG), or
    None. stats: what ran (model, images, passes, GFLOPs per image, seconds)."""

    grid: str
    frames: str | None
    stats: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


class ModelStore:
    """The shipped models plus the configured local ones, each loaded once on first use (or at start)."""

    def __init__(self, cfg: AppConfig) -> None:
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.paths: dict[str, str] = {}
        self.meta: dict[str, dict[str, Any]] = {}
        for path in sorted(ASSETS.glob("*/config.json")):  # shipped model folders
            self._add(path.parent.name, str(path.parent))
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
        if name not in self._loaded:
            self._loaded[name] = load_model(self.paths[name], self.device)
        return self._loaded[name]

    def is_ear(self, name: str) -> bool:
        config = self.meta[name]["config"]
        return self.meta[name]["kind"] == "gpt" and config.get("order") == "spiral"

    def describe_one(self, name: str) -> str:
        """What the model is: EAR, raster, var, actvar, vq, ..."""
        kind = self.meta[name]["kind"]
        return kind if kind != "gpt" else ("EAR" if self.is_ear(name) else "raster")

    def defaults(self, name: str) -> tuple[int, float]:
        """(passes, CFG scale) the page starts with: 8 passes for any-schedule EAR models, else 0 (the
        model's own); the CFG scale the model (or its family) samples with by default."""
        objective = (self.meta[name].get("trained_with") or {}).get("objective", {})
        passes = 8 if self.is_ear(name) and objective.get("randomize") else 0
        family = family_of(self.model(name), name).default_sampling
        return passes, model_sampling_defaults(family, self.meta[name].get("sampling"), name).cfg_scale

    def warm_up(self) -> None:
        """One small request, so the first real one does not pay torch's first-call costs."""
        sample(self, self.default, "0", 1, self.defaults(self.default)[0] or None)

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

    def pipeline(self, name: str, passes: int | None = None, **sampling: Any) -> Pipeline:
        """A pipeline over the cached models; passes: EAR schedule (None = the model's own)."""
        tokenizer = self.tokenizer_for(name)
        given = {k: v for k, v in sampling.items() if v is not None}
        cfg = GenerateConfig(
            model=self.paths[name],
            tokenizer=self.paths[tokenizer],
            schedule=passes,
            sampling=given,
            batch_size=self.cfg.batch_size,
            device=str(self.device),
        )
        return Pipeline(self.model(name), self.model(tokenizer), cfg, self.meta[name].get("trained_with"))


def parse_classes(text: str, num_classes: int) -> list[int]:
    """'' = every class; else comma-separated class ids."""
    if not text.strip():
        return list(range(num_classes))
    try:
        classes = [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError as e:
        raise ValueError(f"classes: give comma-separated class ids such as 0,3,7 (got {text!r})") from e
    bad = sorted({c for c in classes if not 0 <= c < num_classes})
    if bad:
        raise ValueError(f"class id(s) {bad} out of range: this model has classes 0..{num_classes - 1}")
    return classes


def _whole(value: float | None, what: str, lo: int, hi: int) -> int | None:
    if value is None:
        return None
    if value != int(value) or not lo <= value <= hi:
        raise ValueError(f"{what} must be a whole number in {lo}..{hi}, got {value:g}")
    return int(value)


def _noop(fraction: float, desc: str) -> None:
    pass


def sample(
    store: ModelStore,
    name: str,
    classes: str = "",
    per_class: float = 1,
    passes: float | None = None,
    cfg_scale: float | None = None,
    temperature: float | None = None,
    seed: float = 0,
    frames: bool = True,
    progress: Progress = _noop,
) -> SampleResult:
    """Class-conditional images of model `name` (one column per class) and, when asked, its growth GIF
    (EAR/raster) or scale strip (VAR/ActVAR). passes: EAR models only; None or 0 = the model's own."""
    t0 = time.perf_counter()
    store.check_generator(name)
    per_class = _whole(per_class, "images per class", 1, 16)
    passes = _whole(passes, "passes", 0, 256) or None
    seed = _whole(seed, "seed", 0, 2**31 - 1)
    if cfg_scale is not None and not cfg_scale >= 0:
        raise ValueError(f"CFG scale must be >= 0 (1 = off), got {cfg_scale}")
    if temperature is not None and not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if passes is not None and not store.is_ear(name):
        raise ValueError(
            f"passes apply to EAR models; {name} is a {store.describe_one(name)} model that runs its own "
            "steps: set passes to 0"
        )
    progress(0.0, f"preparing {name}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipe = store.pipeline(name, passes, cfg_scale=cfg_scale, temperature=temperature)
    ids = parse_classes(classes, pipe.num_classes)
    labels = torch.tensor(ids).repeat(per_class)  # one column per class, one row per draw
    indices = torch.arange(len(labels))
    images, shots, seconds, ran = [], [], 0.0, 0
    chunks = list(zip(labels.split(store.cfg.batch_size), indices.split(store.cfg.batch_size), strict=True))
    for i, (labels_B, indices_B) in enumerate(chunks):
        progress(i / len(chunks), f"sampling images {int(indices_B[0])}..{int(indices_B[-1])}")
        out = pipe.sample(labels_B, frames=frames and i == 0, seed=seed, indices_N=indices_B)
        images.append(out.images)
        shots = shots or [f[: len(ids)] for f in out.frames]  # one row: the first image of each class
        seconds, ran = seconds + out.seconds, max(ran, out.passes)
    progress(1.0, "writing images")
    folder = store.output_folder()
    grid = save_grid(torch.cat(images), folder / "samples.png", nrow=len(ids), scale=3)
    animation = None
    if shots:
        if pipe.family.frames_name == "growth":
            animation = save_gif(shots, folder / "growth.gif", nrow=len(ids), scale=3, duration_ms=60)
        else:
            animation = save_strip(shots, folder / "scales.png", rows=min(4, len(labels)), scale=3)
    cost = pipe.cost()
    stats = {
        "model": name,
        "images": len(labels),
        "passes": ran,
        "gflops_per_image": round(cost["gflops"], 4),
        "sampling_s": round(seconds, 3),
        "images_per_s": round(len(labels) / seconds, 1),
        "request_s": round(time.perf_counter() - t0, 3),
        "seed": seed,
        "cfg_scale": pipe.sampling.cfg_scale,
        "temperature": pipe.sampling.temperature,
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
    seed: float = 0,
    progress: Progress = _noop,
) -> tuple[SampleResult, SampleResult]:
    """Two models on the same classes and seed, each at the settings the page starts it with (any-schedule
    EAR: 8 passes; otherwise the model's own steps and CFG)."""

    def run(name: str) -> SampleResult:
        return sample(store, name, classes, per_class, *store.defaults(name), None, seed, False, progress)

    return run(left), run(right)


def extend(
    store: ModelStore,
    name: str,
    images: str = "0,1,2,3",
    centre: float = 8,
    canvas: float = 20,
    cfg_scale: float = 2.0,
    seed: float = 0,
) -> tuple[str, dict[str, Any]]:
    """EAR: keep the centre tokens of Fashion-MNIST test images and continue the spiral outward."""
    from argen.apps.extend import ExtendConfig, extend_images

    store.check_generator(name)
    if not store.is_ear(name):
        raise ValueError(f"{name} is not an EAR (spiral) model; extension needs one, e.g. ear_fmnist")
    try:
        indices = [int(t) for t in images.replace(" ", "").split(",") if t]
    except ValueError as e:
        raise ValueError(
            f"images: give comma-separated test-set indices such as 0,1,2 (got {images!r})"
        ) from e
    if not 1 <= len(indices) <= 16:
        raise ValueError(f"give 1 to 16 image indices, got {len(indices)}")
    cfg = ExtendConfig(
        model=store.paths[name],
        tokenizer=store.paths[store.tokenizer_for(name)],
        centre=_whole(centre, "centre", 1, 64),
        canvas=_whole(canvas, "canvas", 1, 64),
        images=indices,
        cfg_scale=cfg_scale,
        seed=_whole(seed, "seed", 0, 2**31 - 1),
        device=str(store.device),
    )
    t0 = time.perf_counter()
    pipe = store.pipeline(name, cfg_scale=cfg_scale)
    report = extend_images(cfg, store.output_folder(), pipe=pipe)
    report["request_s"] = round(time.perf_counter() - t0, 3)
    return report.pop("image"), report


def describe(store: ModelStore, names: Iterable[str]) -> list[tuple[str, str]]:
    """Dropdown choices: (label, name), the label saying what the model is (EAR, raster, var, ...)."""
    return [(f"{name} ({store.describe_one(name)})", name) for name in names]
