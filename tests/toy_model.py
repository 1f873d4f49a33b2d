"""The toy network shared by the training and distributed tests: x (B, D) + class embedding -> residual MLP
blocks -> one scalar per row, registered as model kind "test_toy" so runs save and load it like any model.

Shape legend: B batch, D width.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from argen.model_io import register


@dataclasses.dataclass
class ToyConfig:
    dim: int = 8
    hidden: int = 16
    classes: int = 4
    depth: int = 2
    dropout: float = 0.1


@register("test_toy", ToyConfig)
class ToyNet(nn.Module):
    """x_BD + class embedding -> residual MLP blocks -> scalar. Dropout makes resume depend on the RNG."""

    def __init__(self, config: ToyConfig):
        super().__init__()
        self.config = config
        self.class_emb = nn.Embedding(config.classes, config.dim)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.LayerNorm(config.dim),
                nn.Linear(config.dim, config.hidden),
                nn.GELU(),
                nn.Dropout(config.dropout),
                nn.Linear(config.hidden, config.dim),
            )
            for _ in range(config.depth)
        )
        self.head = nn.Linear(config.dim, 1)

    def forward(self, x_BD: torch.Tensor, y_B: torch.Tensor) -> torch.Tensor:
        h_BD = x_BD + self.class_emb(y_B)
        for block in self.blocks:
            h_BD = h_BD + block(h_BD)
        return self.head(h_BD).squeeze(-1)
