"""The shape of an FFN seen as experts (`MoEConfig`), apart from `moe` so the expert kernels and the MoE FFN
both import it without a cycle."""

from __future__ import annotations

from dataclasses import dataclass

BACKENDS = ("auto", "padded", "segment", "masked")


@dataclass
class MoEConfig:
    """Shape of an FFN seen as experts.

    width: model width C (FFN input/output size).
    hidden: FFN hidden size H (4C in VAR).
    num_experts: E; must divide `hidden`.
    straight_through: combine weights are exactly 1 in the forward pass but carry the router's gradient
        ((s - s.detach()) + 1, s = sigmoid(router logit)); False = plain weight 1, router trained only by its
        own distillation loss.
    backend: how the chosen experts run (see `grouped_expert_ffn`): "padded", "segment", "masked" (the
        dense FFN with the unchosen experts' hidden units zeroed: no FLOPs saved, no gathers), or "auto":
        the grouped kernel where it beats the masked form for the layer's shape (`grouped_pays`), else
        masked.
    kmeans_iters: balanced k-means iterations used by `from_dense` to split the FFN.
    """

    width: int
    hidden: int
    num_experts: int = 16
    straight_through: bool = True
    backend: str = "auto"
    kmeans_iters: int = 20

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.num_experts < 1 or self.hidden % self.num_experts:
            raise ValueError(
                f"num_experts={self.num_experts} must be >= 1 and divide the FFN hidden size {self.hidden}; "
                "pick a divisor such as 8 or 16"
            )

    @property
    def expert_hidden(self) -> int:
        """M: hidden units per expert."""
        return self.hidden // self.num_experts
