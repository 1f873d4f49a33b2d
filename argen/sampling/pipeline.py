"""Generator + tokenizer -> images: the one sampling path behind `argen sample`, `eval`, `bench` and `demo`.

Shape legend: N images requested, B images per batch, C channels, H, W pixels.
Families: "gpt" (raster LlamaGen or spiral EAR, with a single-scale `VQModel`) and "var" (dense `VAR` or
sparse `ActVAR`, with a `MultiScaleVQVAE`).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from argen.models.checkpoints import CheckpointError, load_model
from argen.sampling.logits import SamplingConfig


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
    `FRAME_IMAGES` samples, when asked. seconds: wall-clock of sampling + decoding. passes: forward passes
    per batch (the most over batches; adaptive EAR schedules vary)."""

    images: torch.Tensor
    labels: torch.Tensor
    frames: list[torch.Tensor]
    seconds: float
    passes: int


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Pipeline:
    """A loaded generator and tokenizer. Build with `Pipeline.load(GenerateConfig)`."""

    def __init__(self, model: nn.Module, tokenizer: nn.Module | None, cfg: GenerateConfig) -> None:
        self.model, self.tokenizer, self.cfg = model, tokenizer, cfg
        self.family = "gpt" if model.kind == "gpt" else "var"
        defaults = GPT_SAMPLING if self.family == "gpt" else VAR_SAMPLING
        self.sampling = dataclasses.replace(defaults, **cfg.sampling)
        if tokenizer is not None:
            self._check_tokenizer(tokenizer)

    @classmethod
    def load(cls, cfg: GenerateConfig) -> Pipeline:
        device = resolve_device(cfg.device)
        model = load_model(cfg.model, device)
        tokenizer = load_model(cfg.tokenizer, device) if cfg.tokenizer else None
        if model.kind not in ("gpt", "var", "actvar"):
            raise CheckpointError(f"{cfg.model} is a {model.kind} model, not a generator (gpt|var|actvar)")
        return cls(model, tokenizer, cfg)

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

    def check_labels(self, labels_N: torch.Tensor) -> torch.Tensor:
        labels_N = torch.as_tensor(labels_N, dtype=torch.long).flatten()
        bad = labels_N[(labels_N < 0) | (labels_N >= self.num_classes)]
        if len(bad):
            raise ValueError(
                f"class id(s) {sorted(set(bad.tolist()))} out of range: this model has classes "
                f"0..{self.num_classes - 1}"
            )
        return labels_N

    def cost(self) -> dict[str, Any]:
        """Analytic per-image cost of one sample: forward passes, tokens processed, FLOPs (CFG included)."""
        from argen.eval import flops

        guided = self.sampling.guided
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
    def sample(self, labels_N: torch.Tensor, frames: bool = False, seed: int | None = None) -> Samples:
        """Sample one image per label, in batches; frames of the first batch when asked."""
        if self.tokenizer is None:
            raise ValueError("sampling images needs the generator's tokenizer (--tokenizer)")
        labels_N = self.check_labels(labels_N)
        sampling = self.sampling if seed is None else dataclasses.replace(self.sampling, seed=seed)
        device = next(self.model.parameters()).device
        t0 = time.perf_counter()
        images, shots, passes = [], [], 0
        for i, labels_B in enumerate(labels_N.to(device).split(self.cfg.batch_size)):
            batch_sampling = dataclasses.replace(sampling, seed=sampling.seed + i)
            img_B, frames_B, passes_B = self._sample_batch(labels_B, batch_sampling, frames and i == 0)
            images.append(img_B.float().cpu())
            shots = shots or [f.float().cpu() for f in frames_B]
            passes = max(passes, passes_B)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return Samples(torch.cat(images), labels_N.cpu(), shots, time.perf_counter() - t0, passes)

    def _sample_batch(
        self, labels_B: torch.Tensor, sampling: SamplingConfig, frames: bool
    ) -> tuple[torch.Tensor, list[torch.Tensor], int]:
        if self.family == "gpt":
            from argen.sampling.ar import AdaptiveConfig, ARSampleConfig, generate, growth_frames

            adaptive = AdaptiveConfig(threshold=self.cfg.adaptive) if self.cfg.adaptive is not None else None
            cfg = ARSampleConfig(
                order=self.cfg.order,
                schedule=self.cfg.schedule,
                batch_size=len(labels_B),
                sampling=sampling,
                adaptive=adaptive,
            )
            out = generate(self.model, labels_B, cfg, snapshots=frames)
            grid = self.model.config.grid
            img = self.decode_tokens(out.tokens_BL.view(-1, grid, grid))
            snapshots = [s[:FRAME_IMAGES] for s in out.snapshots]
            shots = growth_frames(snapshots, self.decode_tokens, grid) if frames else []
            return img, shots, out.passes
        from argen.sampling.next_scale import NextScaleConfig, sample_next_scale, sample_next_scale_reference

        net = self.model.sampling_view() if self.model.kind == "actvar" else self.model
        run = sample_next_scale if self.cfg.sampler == "fast" else sample_next_scale_reference
        out = run(net, self.tokenizer, labels_B, NextScaleConfig(sampling, progression=frames))
        return out.images, [p[:FRAME_IMAGES] for p in out.progression or []], len(out.tokens)

    def decode_tokens(self, idx_Bhw: torch.Tensor) -> torch.Tensor:
        """Single-scale codes -> images in [0, 1] (GPT family)."""
        return self.tokenizer.decode_codes(idx_Bhw).add(1).div(2)
