"""Generator + tokenizer -> images: the one sampling path behind `argen sample`, `eval`, `bench` and `demo`.

Shape legend: N images requested, B images per batch, C channels, H, W pixels.
What differs between model kinds (tokenizer, defaults, checks, cost, one batch's sampling) lives in
`argen.sampling.families`; this file never branches on the kind.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from argen.device import dtype_name, resolve_dtype
from argen.distributed import resolve_device
from argen.models.checkpoints import (
    CheckpointError,
    file_digest,
    load_model,
    read_meta,
    recorded_tokenizer,
    tokenizer_fingerprint,
)
from argen.sampling.families import PassHook, family_of
from argen.sampling.logits import SamplingConfig, sample_keys


@dataclass
class GenerateConfig:
    """Which models sample and how.

    model: argen generator file (kind gpt, var or actvar). tokenizer: its tokenizer file (vq for gpt, msvq
        for var/actvar); "" = the one the model's file records it was trained with, where that is found
        (a shipped model's own tokenizer, or the recorded file).
    schedule / order: GPT only; None = the model's own ("sides" for EAR, 31 passes on 16x16). An any-schedule
        EAR model takes any number of passes here (e.g. 8).
    sampling: None = the family's defaults (GPT: constant CFG 2.0; VAR: linear CFG ramp 1.5, top-k 900,
        top-p 0.96); given fields replace them.
    batch_size: images per forward batch (CFG doubles the rows).
    sampler: VAR family: "fast" (static KV cache) or "reference" (no cache; the benchmark baseline).
    adaptive: EAR only: confidence threshold of the adaptive schedule (passes chosen while sampling, for
        models trained with randomised partitions); None = the fixed schedule.
    dtype: "auto" (bf16 where the device's bf16 matmuls beat fp32, detected by `argen.device`), "bf16"
        or "fp32": the model and tokenizer are cast to it; logits, softmax and sampling stay fp32.
    decode_alone: raster/EAR: decode each image in a call of its own, so its pixels never depend on the
        other images of its batch (the conv decoder's float sums depend on the batch shape); what a server
        that batches requests of many clients needs. VAR/ActVAR decode while they sample and refuse it.
    compile: raster/EAR: run each cached pass through `torch.compile`, as CUDA graphs on a GPU (mode
        reduce-overhead), where a pass is bound by kernel launches: raster-B 6.4x faster at batch 1 and 4.9x
        at batch 64 on an H200, same tokens (docs/05, GPU). The first call compiles (~25 s there); on a CPU
        the compile takes minutes for a 1.25x gain, so it is off by default.
    """

    model: str = ""
    tokenizer: str = ""
    schedule: str | int | list[int] | None = None
    order: str | None = None
    sampling: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 32
    device: str = "auto"
    sampler: str = "fast"
    adaptive: float | None = None
    dtype: str = "auto"
    decode_alone: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        if self.dtype not in ("auto", "bf16", "fp32"):
            raise ValueError(f"dtype must be auto, bf16 or fp32, got {self.dtype!r}")
        if self.sampler not in ("fast", "reference"):
            raise ValueError(f"sampler must be 'fast' or 'reference', got {self.sampler!r}")
        if not self.model:
            raise ValueError("give a generator file (--model)")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


@dataclass
class Samples:
    """images: (N, C, H, W) in [0, 1]. frames: per-pass (GPT growth) or per-scale (VAR) images of the first
    `FRAME_IMAGES` samples, when asked. seconds: wall-clock of sampling + decoding. passes: the most forward
    passes any image took; passes_each: per image (adaptive EAR schedules vary)."""

    images: torch.Tensor
    labels: torch.Tensor
    frames: list[torch.Tensor]
    seconds: float
    passes: int
    passes_each: list[int] = field(default_factory=list)
    shapes_each: list[list[tuple[int, int, int]]] = field(default_factory=list)

    @property
    def mean_passes(self) -> float:
        return sum(self.passes_each) / max(len(self.passes_each), 1)


def model_sampling_defaults(
    family_defaults: SamplingConfig, recorded: dict[str, Any] | None, source: str
) -> SamplingConfig:
    """The family's sampling defaults with a model file's own (`"sampling"` in its JSON) over them."""
    fields = {f.name for f in dataclasses.fields(SamplingConfig)} - {"seed"}
    unknown = sorted(set(recorded or {}) - fields)
    if unknown:
        raise ValueError(
            f"{source}: unknown sampling default(s) {unknown} in the model's config; known: {sorted(fields)}"
        )
    return dataclasses.replace(family_defaults, **(recorded or {}))


class Pipeline:
    """A loaded generator and tokenizer. Build with `Pipeline.load(GenerateConfig)`."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: nn.Module | None,
        cfg: GenerateConfig,
        trained_with: dict[str, Any] | None = None,
        sampling_defaults: dict[str, Any] | None = None,
    ) -> None:
        """trained_with: the model file's record of its training (tokenizer fingerprint, objective).
        sampling_defaults: the model file's own sampling settings (over the family's defaults; `cfg.sampling`
        overrides both)."""
        self.model, self.tokenizer, self.cfg = model, tokenizer, cfg
        self.trained_with = trained_with or {}
        self.family = family_of(model, cfg.model)
        self.sampling = dataclasses.replace(
            model_sampling_defaults(self.family.default_sampling, sampling_defaults, cfg.model),
            **cfg.sampling,
        )
        self.family.check(model, cfg, self.trained_with)
        if tokenizer is not None:
            self._check_tokenizer(tokenizer)

    @classmethod
    def load(cls, cfg: GenerateConfig, loader: Callable[[str], nn.Module] | None = None) -> Pipeline:
        """loader: file or name -> model on cfg.device (the app's cache of loaded models); None loads."""
        device = resolve_device(cfg.device)
        load = loader or (lambda path: load_model(path, device))
        model = load(cfg.model)
        family_of(model, cfg.model)  # before loading a tokenizer for something that is not a generator
        if not cfg.tokenizer:  # the one the model was trained with, where it is found
            cfg = dataclasses.replace(cfg, tokenizer=recorded_tokenizer(cfg.model) or "")
        tokenizer = load(cfg.tokenizer) if cfg.tokenizer else None
        dtype = resolve_dtype(cfg.dtype, device)
        model, tokenizer = model.to(dtype), tokenizer.to(dtype) if tokenizer is not None else None
        meta = read_meta(cfg.model)
        return cls(model, tokenizer, cfg, meta.get("trained_with"), meta.get("sampling"))

    def run_record(self) -> dict[str, Any]:
        """The settings that determine the samples (what a sample folder records): model and tokenizer
        fingerprints, sampling settings, schedule, order, adaptive threshold, sampler and dtype."""
        record = {
            "model": file_digest(self.cfg.model),
            "tokenizer": file_digest(self.cfg.tokenizer) if self.cfg.tokenizer else None,
            "sampling": dataclasses.asdict(self.sampling),
            "schedule": self.cfg.schedule,
            "order": self.cfg.order,
            "adaptive": self.cfg.adaptive,
            "sampler": self.cfg.sampler,
        }
        record["dtype"] = self.dtype  # what ran, not "auto"
        return record

    @property
    def dtype(self) -> str:
        """The dtype the models run in ("bf16" / "fp32"; what "auto" resolved to)."""
        return dtype_name(next(self.model.parameters()).dtype)

    @property
    def num_classes(self) -> int:
        return self.family.config(self.model).num_classes

    def require_tokenizer(self) -> nn.Module:
        """The tokenizer, or a clear error when none was given and the model records none found here."""
        if self.tokenizer is None:
            raise ValueError(
                f"making images needs {self.cfg.model}'s tokenizer: give --tokenizer (the model's file "
                "records none that is found here)"
            )
        return self.tokenizer

    def _check_tokenizer(self, tokenizer: nn.Module) -> None:
        expected = self.family.tokenizer_kind
        if tokenizer.kind != expected:
            raise CheckpointError(
                f"a {self.model.kind} generator needs a {expected} tokenizer, "
                f"but {self.cfg.tokenizer} is a {tokenizer.kind} model"
            )
        gen_vocab, tok_vocab = self.family.config(self.model).vocab_size, tokenizer.config.vocab_size
        if gen_vocab != tok_vocab:
            raise CheckpointError(
                f"generator vocabulary {gen_vocab} != tokenizer codebook {tok_vocab}: "
                "use the tokenizer the generator was trained on"
            )
        recorded = self.trained_with.get("tokenizer") or {}
        if recorded.get("fingerprint") and recorded["fingerprint"] != tokenizer_fingerprint(tokenizer):
            raise CheckpointError(
                f"{self.cfg.tokenizer} is not the tokenizer {self.cfg.model} was trained with "
                f"({recorded.get('file')}, codebook {recorded['fingerprint']}): its codes mean other "
                "images. Use that tokenizer."
            )

    def check_labels(self, labels_N: torch.Tensor) -> torch.Tensor:
        labels_N = torch.as_tensor(labels_N, dtype=torch.long).flatten()
        bad = labels_N[(labels_N < 0) | (labels_N >= self.num_classes)]
        if len(bad):
            raise ValueError(
                f"class id(s) {sorted(set(bad.tolist()))} out of range: this model has classes "
                f"0..{self.num_classes - 1}"
            )
        return labels_N

    def cost(self, samples: Samples | None = None) -> dict[str, Any]:
        """Analytic per-image cost of one sample: forward passes, tokens processed, FLOPs (CFG included).

        When the schedule is chosen while sampling (adaptive EAR), give the `samples` that ran to get the
        mean of what each image really cost (passes, tokens and FLOPs of every pass, rejected proposals
        included).
        """
        if self.cfg.adaptive is None:
            return self.family.cost(self.model, self.sampling, self.cfg)
        if samples is None or not samples.shapes_each:
            raise ValueError("an adaptive schedule's cost is known after sampling: pass the samples")
        from argen.models import flops

        guided = self.sampling.guided
        each = [flops.gpt_passes_flops(self.model.config, s, guided) for s in samples.shapes_each]
        mean = {k: sum(e[k] for e in each) / len(each) for k in ("passes", "tokens", "flops")}
        return {
            "steps": round(mean["passes"], 2),
            "steps_max": max(e["passes"] for e in each),
            "tokens": round(mean["tokens"], 1),
            "gflops": mean["flops"] / 1e9,
        }

    @torch.no_grad()
    def sample(
        self,
        labels_N: torch.Tensor,
        frames: bool = False,
        seed: int | None = None,
        indices_N: torch.Tensor | None = None,
        keys_N: torch.Tensor | None = None,
        on_pass: PassHook | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Samples:
        """Sample one image per label, in batches; frames of the first batch when asked.

        Image n is a function of (seed, indices_N[n], settings) only (default indices 0..N-1): the batch
        size, the number of ranks and the other labels of the batch do not change it.
        keys_N: per-image random streams (`sample_keys(seed, indices)`), instead of seed and indices_N: one
            batch can then hold the images of requests with different seeds.
        on_pass: raster/EAR: called in every batch after each pass with that batch's images so far.
        progress: called before each batch with (images done, images asked).
        """
        self.require_tokenizer()
        labels_N = self.check_labels(labels_N)
        sampling = self.sampling if seed is None else dataclasses.replace(self.sampling, seed=seed)
        indices_N = torch.arange(len(labels_N)) if indices_N is None else torch.as_tensor(indices_N)
        if indices_N.shape != labels_N.shape:
            raise ValueError(f"got {len(indices_N)} sample indices for {len(labels_N)} labels")
        device = next(self.model.parameters()).device
        keys_N = sample_keys(sampling.seed, indices_N, device) if keys_N is None else keys_N.to(device)
        if keys_N.shape != labels_N.shape:
            raise ValueError(f"got {len(keys_N)} sample keys for {len(labels_N)} labels")
        hook = {} if on_pass is None else {"on_pass": on_pass}  # families that do not stream need not take it
        t0 = time.perf_counter()
        images, shots, passes, shapes = [], [], [], []
        size = self.cfg.batch_size
        batches = zip(labels_N.to(device).split(size), keys_N.split(size), strict=True)
        for i, (labels_B, keys_B) in enumerate(batches):
            if progress is not None:
                progress(i * size, len(labels_N))
            out = self.family.sample(
                self.model, self.tokenizer, labels_B, keys_B, sampling, self.cfg, frames and i == 0, **hook
            )
            images.append(out.images.float().cpu())
            shots = shots or [f.float().cpu() for f in out.frames]
            passes += out.passes
            shapes += out.shapes
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        return Samples(torch.cat(images), labels_N.cpu(), shots, seconds, max(passes), passes, shapes)
