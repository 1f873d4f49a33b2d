"""Next-scale (VAR) sampling: a fast static-KV-cache sampler and a plain recompute reference.

Shape legend: B images, l tokens of one scale, L tokens over all scales, C width, Cv VQVAE channels,
V vocabulary, h/w full-resolution token grid (the last patch size), S scales.

The VQVAE is used through four members of `argen.tokenizers.multiscale.MultiScaleVQVAE`:
`quantize.embedding`, `next_autoregressive_input(si, S, f_hat, h)` (the official residual accumulation),
`fhat_to_img(f_hat)` (-> [-1, 1]) and `config.patch_nums`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from argen.models.var import VAR
from argen.sampling.logits import SamplingConfig, cfg_combine, cfg_scale_at, sample_keys, sample_tokens


def _var_sampling_defaults() -> SamplingConfig:
    return SamplingConfig(cfg_scale=1.5, cfg_schedule="linear", top_k=900, top_p=0.96)


@dataclass
class NextScaleConfig:
    """How `sample_next_scale` runs.

    sampling: CFG / temperature / top-k / top-p / seed. VAR's defaults: `cfg_schedule="linear"` (guidance
        ramps 1 -> 1 + cfg_scale over the scales, the official ratio), cfg 1.5, top-k 900, top-p 0.96.
    progression: also return the decoded image after every scale (for a progression strip / GIF).
    compile: wrap the per-scale step in `torch.compile` (meant for GPU; one graph per scale, since the static
        cache fixes every scale's shapes; no recompilation across calls). Off by default.
    compile_mode: inductor mode; "reduce-overhead" replays CUDA graphs (not verified on GPU yet).
    compile_backend: torch.compile backend ("inductor"; "aot_eager" checks graph capture without a compiler).
    """

    sampling: SamplingConfig = field(default_factory=_var_sampling_defaults)
    progression: bool = False
    compile: bool = False
    compile_mode: str = "reduce-overhead"
    compile_backend: str = "inductor"

    def __post_init__(self) -> None:
        if self.compile_mode not in ("default", "reduce-overhead", "max-autotune"):
            raise ValueError(
                f"compile_mode must be default|reduce-overhead|max-autotune, got {self.compile_mode!r}"
            )


@dataclass
class NextScaleOutput:
    """images: (B, C, H, W) in [0, 1]. tokens: per scale (B, pn*pn) int64. progression: per scale images."""

    images: torch.Tensor
    tokens: list[torch.Tensor]
    progression: list[torch.Tensor] | None = None


def _check(var: VAR, vqvae: Any) -> None:
    pn_var, pn_vae = tuple(var.config.patch_nums), tuple(vqvae.config.patch_nums)
    if pn_var != pn_vae:
        raise ValueError(f"VAR patch_nums {pn_var} differ from the VQVAE's {pn_vae}; use a matching pair")
    if vqvae.quantize.embedding.weight.shape != (var.config.vocab_size, var.config.vae_channels):
        raise ValueError(
            f"VQVAE codebook {tuple(vqvae.quantize.embedding.weight.shape)} does not match VAR "
            f"(vocab_size {var.config.vocab_size}, vae_channels {var.config.vae_channels})"
        )


def _guidance(var: VAR, labels_B: torch.Tensor, cfg: SamplingConfig) -> tuple[list[float], torch.Tensor]:
    """Per-scale CFG scales and the labels to run: [labels, null labels] when guidance is on at any scale."""
    num_scales = len(var.config.patch_nums)
    scales = [cfg_scale_at(cfg, si, num_scales) for si in range(num_scales)]
    if all(s == 1.0 for s in scales):
        return scales, labels_B
    null_B = torch.full_like(labels_B, var.config.num_classes)
    return scales, torch.cat((labels_B, null_B))


class _Decoder:
    """Turns sampled token maps into the VQVAE's accumulated f_hat and the next scale's VAR input."""

    def __init__(self, vqvae: Any, batch: int, device: torch.device, dtype: torch.dtype) -> None:
        self.vqvae, self.patch_nums = vqvae, tuple(vqvae.config.patch_nums)
        emb = vqvae.quantize.embedding.weight
        side = self.patch_nums[-1]
        self.f_hat = torch.zeros(batch, emb.shape[1], side, side, device=device, dtype=emb.dtype)
        self.dtype = dtype

    def add(self, si: int, idx_Bl: torch.Tensor) -> torch.Tensor:
        """Add scale `si`'s tokens to f_hat; return the next scale's (B, l', Cv) input (f_hat at the end)."""
        pn, batch = self.patch_nums[si], idx_Bl.shape[0]
        h_BChw = self.vqvae.quantize.embedding(idx_Bl).transpose(1, 2).reshape(batch, -1, pn, pn)
        self.f_hat, next_BChw = self.vqvae.next_autoregressive_input(
            si, len(self.patch_nums), self.f_hat, h_BChw
        )
        return next_BChw.flatten(2).transpose(1, 2).to(self.dtype)

    def image(self) -> torch.Tensor:
        return self.vqvae.fhat_to_img(self.f_hat).add(1).mul(0.5).clamp(0, 1)


def _sample_scale(
    logits_BlV: torch.Tensor, scale: float, cfg: SamplingConfig, keys_B: torch.Tensor, bounds: tuple[int, int]
) -> torch.Tensor:
    """Guided tokens of one scale; the counters are the tokens' indices in the multi-scale sequence."""
    batch = keys_B.shape[0]
    if logits_BlV.shape[0] != batch:
        logits_BlV = cfg_combine(logits_BlV[:batch], logits_BlV[batch:], scale)
    counters_l = torch.arange(*bounds, device=keys_B.device)
    return sample_tokens(logits_BlV, keys_B, counters_l, cfg.temperature, cfg.top_k, cfg.top_p)


@torch.no_grad()
def sample_next_scale(
    var: VAR,
    vqvae: Any,
    labels_B: torch.Tensor,
    config: NextScaleConfig | None = None,
    keys_B: torch.Tensor | None = None,
) -> NextScaleOutput:
    """Fast VAR sampling: one forward per scale against a preallocated KV cache.

    Per-block AdaLN modulations, level/position embeddings and the class condition are computed once per
    call (they do not change across scales); no attention mask is needed (the cache prefix holds exactly the
    coarser scales); nothing grows with `torch.cat`.

    Args:
        var: VAR model (eval mode). vqvae: matching `MultiScaleVQVAE`.
        labels_B: (B,) int64 class ids.
        config: sampler options (default: official VAR sampling settings).
        keys_B: per-sample random streams (`sample_keys`); default: samples 0..B-1 of the config's seed.

    Returns:
        NextScaleOutput with images (B, C, H, W) in [0, 1].
    """
    config = config or NextScaleConfig()
    cfg, batch = config.sampling, labels_B.shape[0]
    _check(var, vqvae)
    scales, labels_G = _guidance(var, labels_B, cfg)
    param = var.pos_1LC
    keys_B = sample_keys(cfg.seed, range(batch), param.device) if keys_B is None else keys_B.to(param.device)
    bounds = var.config.scale_bounds
    step: Callable[..., torch.Tensor] = var.step
    if config.compile:
        mode = config.compile_mode if config.compile_backend == "inductor" else None
        step = torch.compile(var.step, backend=config.compile_backend, mode=mode, dynamic=False)
    decoder = _Decoder(vqvae, batch, param.device, param.dtype)
    tokens, frames = [], []
    with var.kv_caches(labels_G.shape[0]):
        cond_GD = var.class_emb(labels_G.to(param.device))
        mods = var.block_mods(cond_GD)
        lvl_pos_1LC = var.lvl_pos()
        x_GlC = var.first_scale_input(cond_GD, lvl_pos_1LC)
        for si in range(len(var.config.patch_nums)):
            idx_Bl = _sample_scale(step(si, x_GlC, cond_GD, mods), scales[si], cfg, keys_B, bounds[si])
            tokens.append(idx_Bl)
            next_BlCv = decoder.add(si, idx_Bl)
            if config.progression:
                frames.append(decoder.image())
            if si + 1 < len(var.config.patch_nums):
                x_BlC = var.next_scale_input(si + 1, next_BlCv, lvl_pos_1LC)
                x_GlC = x_BlC.repeat(labels_G.shape[0] // batch, 1, 1)
    return NextScaleOutput(decoder.image(), tokens, frames if config.progression else None)


@torch.no_grad()
def sample_next_scale_reference(
    var: VAR,
    vqvae: Any,
    labels_B: torch.Tensor,
    config: NextScaleConfig | None = None,
    keys_B: torch.Tensor | None = None,
) -> NextScaleOutput:
    """Plain VAR sampling without a cache: every scale re-runs the teacher-forcing forward on the prefix.

    Quadratic in the number of scales; the equality oracle for `sample_next_scale` and the benchmark baseline.
    Same arguments and output as `sample_next_scale` (`compile` is ignored).
    """
    config = config or NextScaleConfig()
    cfg, batch = config.sampling, labels_B.shape[0]
    _check(var, vqvae)
    scales, labels_G = _guidance(var, labels_B, cfg)
    param = var.pos_1LC
    keys_B = sample_keys(cfg.seed, range(batch), param.device) if keys_B is None else keys_B.to(param.device)
    decoder = _Decoder(vqvae, batch, param.device, param.dtype)
    labels_G = labels_G.to(param.device)
    inputs_BLCv = torch.zeros(batch, 0, var.config.vae_channels, device=param.device, dtype=param.dtype)
    tokens, frames = [], []
    for si, (begin, end) in enumerate(var.config.scale_bounds):
        reps = labels_G.shape[0] // batch
        logits_GLV = var(labels_G, inputs_BLCv.repeat(reps, 1, 1))
        idx_Bl = _sample_scale(logits_GLV[:, begin:end], scales[si], cfg, keys_B, (begin, end))
        tokens.append(idx_Bl)
        next_BlCv = decoder.add(si, idx_Bl)
        if config.progression:
            frames.append(decoder.image())
        if si + 1 < len(var.config.patch_nums):
            inputs_BLCv = torch.cat((inputs_BLCv, next_BlCv), dim=1)
    return NextScaleOutput(decoder.image(), tokens, frames if config.progression else None)
