"""Exponential moving average of a model's parameters (kept in fp32, sharded like the model under FSDP2)."""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    """Shadow copy `ema = decay * ema + (1 - decay) * param` of every trainable parameter.

    Args:
        model: the unwrapped model (or the FSDP2-sharded one: the shadows are then DTensors with the same
            sharding, and `full_state_dict` gathers them; every rank must call it).
        decay: target decay; the effective decay ramps up as min(decay, (1 + n) / (10 + n)) so early averages
            are not dominated by the random initialisation.
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}; use 0 in the config to disable EMA")
        self.decay = decay
        self.num_updates = 0
        self.shadow: dict[str, torch.Tensor] = {
            name: p.detach().clone().float() for name, p in model.named_parameters() if p.requires_grad
        }

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        for name, p in model.named_parameters():
            if name in self.shadow:
                self.shadow[name].lerp_(p.detach().float(), 1.0 - d)
        self.num_updates += 1

    def full_state_dict(self, keep: bool = True) -> dict[str, torch.Tensor]:
        """Full (unsharded) fp32 CPU tensors by parameter name; collective under FSDP2.

        Args:
            keep: False on ranks that only take part in the gathers (returns {} there, saving host memory).
        """
        out = {}
        for name, t in self.shadow.items():
            full = t.full_tensor() if hasattr(t, "full_tensor") else t
            if keep:
                out[name] = full.detach().cpu().clone()
        return out

    @torch.no_grad()
    def load_full_state_dict(self, state: dict[str, torch.Tensor], num_updates: int) -> None:
        """Restore from full tensors (re-sharded to match the live shadows)."""
        missing = sorted(set(self.shadow) - set(state))
        if missing:
            raise ValueError(f"EMA state lacks {len(missing)} parameter(s), e.g. {missing[:4]}")
        for name, t in self.shadow.items():
            src = state[name].to(torch.float32)
            if hasattr(t, "full_tensor"):
                from torch.distributed.tensor import distribute_tensor

                src = distribute_tensor(src.to(t.device), t.device_mesh, t.placements)
                t.to_local().copy_(src.to_local())
            else:
                t.copy_(src.to(t.device))
        self.num_updates = num_updates
