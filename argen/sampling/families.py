"""Generator families: what the pipeline needs to know of a model kind, behind one small interface.

A family says which tokenizer kind its models decode with, their vocabulary and classes, the default
sampling settings, which settings it refuses, its analytic cost, and how it samples one batch. The pipeline,
bench, eval, demo and CLI use this interface and never branch on model kinds; a new kind is one class plus a
`register_family` call, and an unregistered kind is an error.

Shape legend: B images per batch, C channels, H, W pixels.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from argen.models.checkpoints import CheckpointError
from argen.sampling.logits import SamplingConfig

FRAME_IMAGES = 16  # images per animation frame: decoding every pass of a whole batch costs more than sampling
# (pass index, number of passes, (B, C, H, W) images in [0, 1] so far): the growth, pass by pass
PassHook = Callable[[int, int, torch.Tensor], None]


@dataclass
class BatchOut:
    """images (B, C, H, W) in [0, 1]; frames of the first FRAME_IMAGES images (when asked); passes run per
    image; pass shapes per image when the schedule was chosen while sampling (adaptive EAR)."""

    images: torch.Tensor
    frames: list[torch.Tensor]
    passes: list[int]
    shapes: list[list[tuple[int, int, int]]] = field(default_factory=list)


class Family(Protocol):
    """The generator interface (see the module docstring). `settings` is a `GenerateConfig`."""

    tokenizer_kind: str  # the tokenizer kind its models decode with
    frames_name: str  # what its frames show: "growth" (tokens appearing) or "scales" (coarse to fine)
    default_sampling: SamplingConfig

    def config(self, model: nn.Module) -> Any:
        """The config holding vocab_size and num_classes."""
        ...

    def check(self, model: nn.Module, settings: Any, trained_with: dict[str, Any]) -> None:
        """Raise ValueError for settings the model was not trained for."""
        ...

    def cost(self, model: nn.Module, sampling: SamplingConfig, settings: Any) -> dict[str, Any]:
        """Analytic per-image cost: steps, tokens processed, GFLOPs (CFG included)."""
        ...

    def sample(
        self,
        model: nn.Module,
        tokenizer: nn.Module,
        labels_B: torch.Tensor,
        keys_B: torch.Tensor,
        sampling: SamplingConfig,
        settings: Any,
        frames: bool,
        on_pass: PassHook | None = None,
    ) -> BatchOut:
        """One batch; `on_pass`, where the family supports it, sees the images after every pass."""
        ...


_FAMILIES: dict[str, Family] = {}


def register_family(kind: str, family: Family) -> Family:
    _FAMILIES[kind] = family
    return family


def family_of(model: nn.Module, source: str = "the model") -> Family:
    kind = getattr(model, "kind", type(model).__name__)
    if kind not in _FAMILIES:
        raise CheckpointError(
            f"{source} is a {kind} model, not a generator ({' | '.join(sorted(_FAMILIES))})"
        )
    return _FAMILIES[kind]


# ----------------------------------------------------------------------------------- raster and EAR (GPT)
class GPTFamily:
    tokenizer_kind = "vq"
    frames_name = "growth"
    default_sampling = SamplingConfig(cfg_scale=2.0)

    def config(self, model: nn.Module) -> Any:
        return model.config

    def check(self, model: nn.Module, settings: Any, trained_with: dict[str, Any]) -> None:
        mc, name = model.config, settings.model
        if settings.sampler != "fast":
            raise ValueError(
                f"--sampler {settings.sampler} applies to VAR/ActVAR models; {name} is a GPT model"
            )
        if settings.order is not None and settings.order != mc.order:
            raise ValueError(
                f"{name} was trained to generate in {mc.order!r} order; sampling it in {settings.order!r} "
                "order gives garbage. Leave --order out (or train a model for that order)."
            )
        if mc.mode == "next_token" and (settings.schedule is not None or settings.adaptive is not None):
            raise ValueError(
                f"{name} is a raster (next-token) model: it makes one token per pass, so --schedule and "
                "--adaptive do not apply (they are for EAR models)"
            )
        randomized = bool(trained_with.get("objective", {}).get("randomize"))
        if trained_with and not randomized:
            if settings.adaptive is not None:
                warnings.warn(
                    f"{name} was trained on the fixed {mc.schedule!r} schedule; adaptive passes need a "
                    "model trained with objective.randomize=true (e.g. ear_any_fmnist), expect worse samples",
                    stacklevel=3,
                )
            elif settings.schedule is not None and settings.schedule != mc.schedule:
                warnings.warn(
                    f"{name} was trained on the {mc.schedule!r} schedule only; {settings.schedule!r} is an "
                    "experiment (any-schedule models are trained with objective.randomize=true)",
                    stacklevel=3,
                )

    def cost(self, model: nn.Module, sampling: SamplingConfig, settings: Any) -> dict[str, Any]:
        from argen.models import flops
        from argen.sampling.ar import GenerationProcess

        proc = GenerationProcess.for_model(model, sampling, settings.order, settings.schedule)
        out = flops.gpt_sampling_flops(model.config, proc.order, guided=sampling.guided)
        return {"steps": out["passes"], "tokens": out["tokens"], "gflops": out["flops"] / 1e9}

    def sample(
        self,
        model: nn.Module,
        tokenizer: nn.Module,
        labels_B: torch.Tensor,
        keys_B: torch.Tensor,
        sampling: SamplingConfig,
        settings: Any,
        frames: bool,
        on_pass: PassHook | None = None,
    ) -> BatchOut:
        """on_pass: the batch's images after every pass, cells not generated yet grey (fixed schedules)."""
        from argen.sampling.ar import AdaptiveConfig, GenerationProcess, growth_frames, sample_adaptive

        proc = GenerationProcess.for_model(
            model, sampling, settings.order, settings.schedule, compile=settings.compile
        )
        if settings.compile and labels_B.device.type == "cuda":
            proc.compile_mode = "reduce-overhead"  # CUDA graphs: a cached pass is bound by launches
        grid = model.config.grid

        def decode(idx_Bhw: torch.Tensor) -> torch.Tensor:
            return tokenizer.decode_codes(idx_Bhw).add(1).div(2)

        if settings.adaptive is None:
            hook = None
            if on_pass is not None:
                hook = lambda i, n, tokens_BL: on_pass(i, n, growth_frames([tokens_BL], decode, grid)[0])
            out = proc.sample(model, labels_B, snapshots=frames, keys_B=keys_B, on_pass=hook)
            passes, shapes = [out.passes] * len(labels_B), []
        elif on_pass is not None:
            raise ValueError("pass-by-pass images need a fixed schedule (adaptive passes run image by image)")
        else:
            adaptive = AdaptiveConfig(threshold=settings.adaptive)
            out = sample_adaptive(proc, model, labels_B, adaptive, snapshots=frames, keys_B=keys_B)
            passes, shapes = out.passes_each, out.shapes_each
        tokens_Bhw = out.tokens_BL.view(-1, grid, grid)
        if settings.decode_alone:  # one image per call: its pixels never depend on the batch's others
            images = torch.cat([decode(idx_hw[None]) for idx_hw in tokens_Bhw])
        else:
            images = decode(tokens_Bhw)
        shots = growth_frames([s[:FRAME_IMAGES] for s in out.snapshots], decode, grid) if frames else []
        return BatchOut(images, shots, passes, shapes)


# ------------------------------------------------------------------------------------- VAR and ActVAR
class VARFamily:
    """Next-scale models. `view` gives the network the VAR samplers run (ActVAR: its sparse view), `unwrap`
    the dense VAR config, `flops` the analytic sampling FLOPs."""

    tokenizer_kind = "msvq"
    frames_name = "scales"
    default_sampling = SamplingConfig(cfg_scale=1.5, cfg_schedule="linear", top_k=900, top_p=0.96)

    def __init__(
        self,
        view: Callable[[nn.Module], Any] = lambda m: m,
        unwrap: Callable[[nn.Module], Any] = lambda m: m.config,
        flops: Callable[[nn.Module, bool], float] | None = None,
    ) -> None:
        self.view, self.unwrap, self.flops = view, unwrap, flops

    def config(self, model: nn.Module) -> Any:
        return self.unwrap(model)

    def check(self, model: nn.Module, settings: Any, trained_with: dict[str, Any]) -> None:
        gpt_only = {
            "--order": settings.order,
            "--schedule": settings.schedule,
            "--adaptive": settings.adaptive,
            "decode_alone": settings.decode_alone or None,
            "--compile": settings.compile or None,
        }
        for flag, value in gpt_only.items():
            if value is not None:
                raise ValueError(
                    f"{flag} applies to raster/EAR models; {settings.model} is a {model.kind} model whose "
                    "steps are its scales"
                )

    def cost(self, model: nn.Module, sampling: SamplingConfig, settings: Any) -> dict[str, Any]:
        from argen.models import flops

        vc, guided = self.unwrap(model), sampling.guided
        if self.flops is not None:
            total = self.flops(model, guided)
        else:
            total = flops.var_sampling_flops(vc, cfg=guided, adaln_per_scale=False)["total"]
        rows = 2 if guided else 1
        return {"steps": len(vc.patch_nums), "tokens": rows * vc.scale_bounds[-1][1], "gflops": total / 1e9}

    def sample(
        self,
        model: nn.Module,
        tokenizer: nn.Module,
        labels_B: torch.Tensor,
        keys_B: torch.Tensor,
        sampling: SamplingConfig,
        settings: Any,
        frames: bool,
        on_pass: PassHook | None = None,
    ) -> BatchOut:
        """on_pass is refused: scales are decoded with the batch inside the sampler, not as they come."""
        from argen.sampling.next_scale import NextScaleConfig, sample_next_scale, sample_next_scale_reference

        if on_pass is not None:
            raise ValueError(f"{settings.model}: pass-by-pass images are for raster/EAR models")
        run = sample_next_scale if settings.sampler == "fast" else sample_next_scale_reference
        out = run(
            self.view(model), tokenizer, labels_B, NextScaleConfig(sampling, progression=frames), keys_B
        )
        progression = [p[:FRAME_IMAGES] for p in out.progression or []]
        return BatchOut(out.images, progression, [len(out.tokens)] * len(labels_B))


def _actvar_flops(model: nn.Module, guided: bool) -> float:
    from argen.models import flops

    return flops.actvar_sampling_flops(model.config, cfg=guided, adaln_per_scale=False)["total"]


register_family("gpt", GPTFamily())
register_family("var", VARFamily())
register_family(
    "actvar", VARFamily(view=lambda m: m.sampling_view(), unwrap=lambda m: m.config.var, flops=_actvar_flops)
)
