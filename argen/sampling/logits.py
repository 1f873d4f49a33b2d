"""Pure sampling math: classifier-free guidance, temperature, top-k, top-p, explicit generator.

Shape legend: B batch, L positions sampled at once, V vocabulary.
CFG is combined here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SamplingConfig:
    """How tokens are drawn from logits.

    cfg_scale: guidance scale s in `uncond + s * (cond - uncond)`; 1.0 disables guidance.
    cfg_schedule: "constant" (LlamaGen/EAR) or "linear" (VAR: s ramps per scale from 1 to cfg_scale).
    temperature: logits are divided by it (> 0).
    top_k: keep the k largest logits (0 = all); top_k=1 is greedy.
    top_p: nucleus mass kept (1.0 = all).
    seed: seed of the explicit torch.Generator.
    """

    cfg_scale: float = 1.0
    cfg_schedule: str = "constant"
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = no top-k), got {self.top_k}")
        if self.cfg_schedule not in ("constant", "linear"):
            raise ValueError(f"cfg_schedule must be 'constant' or 'linear', got {self.cfg_schedule!r}")

    @property
    def guided(self) -> bool:
        return self.cfg_scale != 1.0


def cfg_combine(cond_BLV: torch.Tensor, uncond_BLV: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: `uncond + scale * (cond - uncond)`.

    VAR's `(1 + t) * cond - t * uncond` is the same expression with `scale = 1 + t`.
    """
    return uncond_BLV + scale * (cond_BLV - uncond_BLV)


def cfg_scale_at(cfg: SamplingConfig, step: int, num_steps: int) -> float:
    """Guidance scale at `step` of `num_steps`: constant, or VAR's linear ramp 1 + cfg * step / (S - 1)."""
    if cfg.cfg_schedule == "constant" or num_steps <= 1:
        return cfg.cfg_scale
    return 1.0 + cfg.cfg_scale * step / (num_steps - 1)


def filter_logits(logits_BLV: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Mask logits outside the top-k, then outside the top-p nucleus, with -inf."""
    logits_BLV = logits_BLV.clone()
    vocab = logits_BLV.shape[-1]
    if 0 < top_k < vocab:
        kth = torch.topk(logits_BLV, top_k, dim=-1).values[..., -1:]
        logits_BLV.masked_fill_(logits_BLV < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(logits_BLV, dim=-1, descending=False)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove_sorted = cum <= 1 - top_p
        remove_sorted[..., -1:] = False  # always keep the most likely token
        remove = remove_sorted.scatter(-1, sorted_idx, remove_sorted)
        logits_BLV.masked_fill_(remove, float("-inf"))
    return logits_BLV


def sample_tokens(
    logits_BLV: torch.Tensor,
    generator: torch.Generator | None,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
) -> torch.Tensor:
    """Draw one token per position, independently. Returns (B, L) int64; top_k=1 is exact argmax."""
    if top_k == 1:
        return logits_BLV.argmax(dim=-1)
    logits = filter_logits(logits_BLV.float() / temperature, top_k, top_p)
    probs = logits.softmax(dim=-1)
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat, 1, generator=generator).reshape(probs.shape[:-1])


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g
