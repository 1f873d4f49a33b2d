"""Generator + tokenizer -> images: the one sampling path behind `argen sample`, `eval`, `bench` and `demo`.

Shape legend: N images requested, B images per batch, C channels, H, W pixels.
Families: "gpt" (raster LlamaGen or spiral EAR, with a single-scale `VQModel`) and "var" (dense `VAR` or
sparse `ActVAR`, with a `MultiScaleVQVAE`).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from argen.distributed import resolve_device
from argen.models.checkpoints import (
    CheckpointError,
    file_digest,
    load_model,
    read_meta,
    resolve_model_path,
    tokenizer_fingerprint,
)
from argen.sampling.logits import SamplingConfig, sample_keys


@dataclass
class GenerateConfig:
    """Which models sample and how.

    model: argen generator file (kind gpt, var or actvar). tokenizer: its tokenizer file (vq for gpt, msvq
        for var/actvar).
    schedule / order: GPT only; None = the model's own ("sides" for EAR, 31 passes on 16x16). An any-schedule
        EAR model takes any number of passes here (e.g. 8).
    sampling: None = the family's defaults (GPT: constant CFG 2.0; VAR: linear CFG ramp 1.5, top-k 900,
        top-p 0.96); given fields replace them.
    batch_size: images per forward batch (CFG doubles the rows).
    sampler: VAR family: "fast" (static KV cache) or "reference" (no cache; the benchmark baseline).
    adaptive: EAR only: confidence threshold of the adaptive schedule (passes chosen while sampling, for
        models trained with randomised partitions); None = the fixed schedule.
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

    def __post_init__(self) -> None:
        if self.sampler not in ("fast", "reference"):
            raise ValueError(f"sampler must be 'fast' or 'reference', got {self.sampler!r}")
        if not self.model:
            raise ValueError("give a generator file (--model)")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


GPT_SAMPLING = SamplingConfig(cfg_scale=2.0)
FRAME_IMAGES = 16  # images per animation frame: decoding every pass of a whole batch costs more than sampling
VAR_SAMPLING = SamplingConfig(cfg_scale=1.5, cfg_schedule="linear", top_k=900, top_p=0.96)


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


class Pipeline:
    """A loaded generator and tokenizer. Build with `Pipeline.load(GenerateConfig)`."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: nn.Module | None,
        cfg: GenerateConfig,
        trained_with: dict[str, Any] | None = None,
    ) -> None:
        """trained_with: the model file's record of its training (tokenizer fingerprint, objective)."""
        self.model, self.tokenizer, self.cfg = model, tokenizer, cfg
        self.trained_with = trained_with or {}
        self.family = "gpt" if model.kind == "gpt" else "var"
        defaults = GPT_SAMPLING if self.family == "gpt" else VAR_SAMPLING
        self.sampling = dataclasses.replace(defaults, **cfg.sampling)
        self._check_settings()
        if tokenizer is not None:
            self._check_tokenizer(tokenizer)

    @classmethod
    def load(cls, cfg: GenerateConfig) -> Pipeline:
        device = resolve_device(cfg.device)
        model = load_model(cfg.model, device)
        if model.kind not in ("gpt", "var", "actvar"):
            raise CheckpointError(f"{cfg.model} is a {model.kind} model, not a generator (gpt|var|actvar)")
        tokenizer = load_model(cfg.tokenizer, device) if cfg.tokenizer else None
        return cls(model, tokenizer, cfg, read_meta(resolve_model_path(cfg.model)).get("trained_with"))

    def _check_settings(self) -> None:
        """Refuse settings the model was not trained for (they would give garbage without a word)."""
        cfg, name = self.cfg, self.cfg.model
        if self.family == "var":
            for flag, value in (
                ("--order", cfg.order),
                ("--schedule", cfg.schedule),
                ("--adaptive", cfg.adaptive),
            ):
                if value is not None:
                    raise ValueError(
                        f"{flag} applies to raster/EAR models; {name} is a {self.model.kind} model "
                        "whose steps are its scales"
                    )
            return
        mc = self.model.config
        if cfg.sampler != "fast":
            raise ValueError(f"--sampler {cfg.sampler} applies to VAR/ActVAR models; {name} is a GPT model")
        if cfg.order is not None and cfg.order != mc.order:
            raise ValueError(
                f"{name} was trained to generate in {mc.order!r} order; sampling it in {cfg.order!r} order "
                "gives garbage. Leave --order out (or train a model for that order)."
            )
        if mc.mode == "next_token" and (cfg.schedule is not None or cfg.adaptive is not None):
            raise ValueError(
                f"{name} is a raster (next-token) model: it makes one token per pass, so --schedule and "
                "--adaptive do not apply (they are for EAR models)"
            )
        randomized = bool(self.trained_with.get("objective", {}).get("randomize"))
        if cfg.adaptive is not None and not randomized and self.trained_with:
            warnings.warn(
                f"{name} was trained on the fixed {mc.schedule!r} schedule; adaptive passes need a model "
                "trained with objective.randomize=true (e.g. ear_any_fmnist), expect worse samples",
                stacklevel=2,
            )
        if cfg.schedule is not None and cfg.schedule != mc.schedule and not randomized and self.trained_with:
            warnings.warn(
                f"{name} was trained on the {mc.schedule!r} schedule only; schedule {cfg.schedule!r} is an "
                "experiment (any-schedule models are trained with objective.randomize=true)",
                stacklevel=2,
            )

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
        dtype = getattr(self.cfg, "dtype", None)
        if dtype is not None:
            record["dtype"] = str(dtype)
        return record

    @property
    def num_classes(self) -> int:
        return self._var_config().num_classes if self.family == "var" else self.model.config.num_classes

    def _var_config(self) -> Any:
        return self.model.config.var if self.model.kind == "actvar" else self.model.config

    def _check_tokenizer(self, tokenizer: nn.Module) -> None:
        expected = "vq" if self.family == "gpt" else "msvq"
        if tokenizer.kind != expected:
            raise CheckpointError(
                f"a {self.model.kind} generator needs a {expected} tokenizer, "
                f"but {self.cfg.tokenizer} is a {tokenizer.kind} model"
            )
        gen_vocab = self.model.config.vocab_size if self.family == "gpt" else self._var_config().vocab_size
        tok_vocab = tokenizer.config.vocab_size
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

        With adaptive EAR the schedule is chosen while sampling: give the `samples` that ran to get the mean
        of what each image really cost (passes, tokens and FLOPs of every pass, rejected proposals included).
        """
        from argen.eval import flops

        guided = self.sampling.guided
        if self.cfg.adaptive is not None:
            if samples is None or not samples.shapes_each:
                raise ValueError("an adaptive schedule's cost is known after sampling: pass the samples")
            each = [flops.gpt_passes_flops(self.model.config, s, guided) for s in samples.shapes_each]
            mean = {k: sum(e[k] for e in each) / len(each) for k in ("passes", "tokens", "flops")}
            return {
                "steps": round(mean["passes"], 2),
                "steps_max": max(e["passes"] for e in each),
                "tokens": round(mean["tokens"], 1),
                "gflops": mean["flops"] / 1e9,
            }
        if self.family == "gpt":
            from argen.sampling.ar import GenerationProcess

            proc = GenerationProcess.for_model(self.model, self.sampling, self.cfg.order, self.cfg.schedule)
            out = flops.gpt_sampling_flops(self.model.config, proc.order, guided=guided)
            return {"steps": out["passes"], "tokens": out["tokens"], "gflops": out["flops"] / 1e9}
        vc = self._var_config()
        rows = 2 if guided else 1
        if self.model.kind == "actvar":
            total = flops.actvar_sampling_flops(self.model.config, cfg=guided, adaln_per_scale=False)["total"]
        else:
            total = flops.var_sampling_flops(vc, cfg=guided, adaln_per_scale=False)["total"]
        return {"steps": len(vc.patch_nums), "tokens": rows * vc.scale_bounds[-1][1], "gflops": total / 1e9}

    @torch.no_grad()
    def sample(
        self,
        labels_N: torch.Tensor,
        frames: bool = False,
        seed: int | None = None,
        indices_N: torch.Tensor | None = None,
    ) -> Samples:
        """Sample one image per label, in batches; frames of the first batch when asked.

        Image n is a function of (seed, indices_N[n], settings) only (default indices 0..N-1): the batch
        size, the number of ranks and the other labels of the batch do not change it.
        """
        if self.tokenizer is None:
            raise ValueError("sampling images needs the generator's tokenizer (--tokenizer)")
        labels_N = self.check_labels(labels_N)
        sampling = self.sampling if seed is None else dataclasses.replace(self.sampling, seed=seed)
        indices_N = torch.arange(len(labels_N)) if indices_N is None else torch.as_tensor(indices_N)
        if indices_N.shape != labels_N.shape:
            raise ValueError(f"got {len(indices_N)} sample indices for {len(labels_N)} labels")
        device = next(self.model.parameters()).device
        keys_N = sample_keys(sampling.seed, indices_N, device)
        t0 = time.perf_counter()
        images, shots, passes, shapes = [], [], [], []
        size = self.cfg.batch_size
        batches = zip(labels_N.to(device).split(size), keys_N.split(size), strict=True)
        for i, (labels_B, keys_B) in enumerate(batches):
            img_B, frames_B, passes_B, shapes_B = self._sample_batch(
                labels_B, keys_B, sampling, frames and i == 0
            )
            images.append(img_B.float().cpu())
            shots = shots or [f.float().cpu() for f in frames_B]
            passes += passes_B
            shapes += shapes_B
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        return Samples(torch.cat(images), labels_N.cpu(), shots, seconds, max(passes), passes, shapes)

    def _sample_batch(
        self, labels_B: torch.Tensor, keys_B: torch.Tensor, sampling: SamplingConfig, frames: bool
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[int], list]:
        """Images, frames (when asked), the passes run per image and (adaptive) each image's pass shapes."""
        if self.family == "gpt":
            from argen.sampling.ar import AdaptiveConfig, GenerationProcess, growth_frames, sample_adaptive

            proc = GenerationProcess.for_model(self.model, sampling, self.cfg.order, self.cfg.schedule)
            if self.cfg.adaptive is None:
                out = proc.sample(self.model, labels_B, snapshots=frames, keys_B=keys_B)
                passes, shapes = [out.passes] * len(labels_B), []
            else:
                adaptive = AdaptiveConfig(threshold=self.cfg.adaptive)
                out = sample_adaptive(proc, self.model, labels_B, adaptive, snapshots=frames, keys_B=keys_B)
                passes, shapes = out.passes_each, out.shapes_each
            grid = self.model.config.grid
            img = self.decode_tokens(out.tokens_BL.view(-1, grid, grid))
            snapshots = [s[:FRAME_IMAGES] for s in out.snapshots]
            shots = growth_frames(snapshots, self.decode_tokens, grid) if frames else []
            return img, shots, passes, shapes
        from argen.sampling.next_scale import NextScaleConfig, sample_next_scale, sample_next_scale_reference

        net = self.model.sampling_view() if self.model.kind == "actvar" else self.model
        run = sample_next_scale if self.cfg.sampler == "fast" else sample_next_scale_reference
        out = run(net, self.tokenizer, labels_B, NextScaleConfig(sampling, progression=frames), keys_B)
        progression = [p[:FRAME_IMAGES] for p in out.progression or []]
        return out.images, progression, [len(out.tokens)] * len(labels_B), []

    def decode_tokens(self, idx_Bhw: torch.Tensor) -> torch.Tensor:
        """Single-scale codes -> images in [0, 1] (GPT family)."""
        return self.tokenizer.decode_codes(idx_Bhw).add(1).div(2)
