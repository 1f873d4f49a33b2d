"""Generation orders as data: which cell each sequence position holds and which step (group) emits it.

Shape legend: L = n*n sequence positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from argen.orders import spiral as sp

ORDERS = ("raster", "spiral", "random")
Schedule = str | int | list[int] | tuple[int, ...] | None


@dataclass(frozen=True)
class GenerationOrder:
    """A permutation of an n x n token grid split into consecutive groups (one group per sampling step).

    perm_L: raster index of the cell at each sequence position.
    group_sizes: tokens emitted per step, summing to L (consecutive along `perm_L`).
    grid: n (the canvas is n x n).
    name: how it was built (for messages).
    """

    perm_L: torch.Tensor
    group_sizes: tuple[int, ...]
    grid: int
    name: str = "custom"

    def __post_init__(self) -> None:
        # orders are small host-side data; keep them on the CPU even if a wrapper (DDP) moved them
        object.__setattr__(self, "perm_L", torch.as_tensor(self.perm_L).detach().cpu().long())
        length = self.grid * self.grid
        if self.perm_L.shape != (length,) or not torch.equal(self.perm_L.sort().values, torch.arange(length)):
            raise ValueError(
                f"perm_L must be a permutation of range({length}) for a {self.grid}x{self.grid} grid"
            )
        if sum(self.group_sizes) != length or min(self.group_sizes) < 1:
            raise ValueError(f"group sizes must be >= 1 and sum to {length}, got {list(self.group_sizes)}")

    @property
    def length(self) -> int:
        return self.grid * self.grid

    @property
    def num_steps(self) -> int:
        return len(self.group_sizes)

    @property
    def group_id_L(self) -> torch.Tensor:
        """Step index of each sequence position."""
        sizes = torch.tensor(self.group_sizes)
        return torch.repeat_interleave(torch.arange(len(sizes)), sizes)

    @property
    def bounds(self) -> list[int]:
        """Cumulative boundaries [0, s0, s0+s1, ..., L]."""
        out = [0]
        for s in self.group_sizes:
            out.append(out[-1] + s)
        return out

    @property
    def rows_L(self) -> torch.Tensor:
        return self.perm_L // self.grid

    @property
    def cols_L(self) -> torch.Tensor:
        return self.perm_L % self.grid

    @property
    def inverse_L(self) -> torch.Tensor:
        """Sequence position of each raster cell."""
        inv = torch.empty_like(self.perm_L)
        inv[self.perm_L] = torch.arange(self.length)
        return inv

    def to_sequence(self, tokens_BL: torch.Tensor) -> torch.Tensor:
        """Raster-ordered tokens -> sequence order."""
        return tokens_BL[:, self.perm_L.to(tokens_BL.device)]

    def to_raster(self, tokens_BL: torch.Tensor) -> torch.Tensor:
        """Sequence-ordered tokens -> raster order."""
        return tokens_BL[:, self.inverse_L.to(tokens_BL.device)]

    def with_sizes(self, sizes: list[int] | tuple[int, ...]) -> GenerationOrder:
        """Same permutation, another grouping (e.g. a random partition during training)."""
        return GenerationOrder(self.perm_L, tuple(int(s) for s in sizes), self.grid, self.name)


def schedule_sizes(schedule: Schedule, grid: int, default: str = "sides") -> list[int]:
    """Group sizes from a schedule spec.

    Args:
        schedule: "sides" (2n-1 steps, EAR), "rings" (n steps), "tokens:K" (K tokens per step), an int
            (that many steps, sizes growing with the perimeter), a list of sizes, or None (= `default`).
        grid: n.
    """
    length = grid * grid
    schedule = default if schedule is None else schedule
    if isinstance(schedule, bool):
        raise ValueError(f"invalid schedule {schedule!r}")
    if isinstance(schedule, int):
        return sp.steps_schedule(length, schedule)
    if isinstance(schedule, list | tuple):
        return [int(s) for s in schedule]
    if schedule == "sides":
        return sp.sides_schedule(grid)
    if schedule == "rings":
        return sp.rings_schedule(grid)
    if isinstance(schedule, str) and schedule.startswith("tokens:"):
        return sp.constant_schedule(length, int(schedule.split(":", 1)[1]))
    if isinstance(schedule, str) and schedule.isdigit():
        return sp.steps_schedule(length, int(schedule))
    raise ValueError(
        f"unknown schedule {schedule!r}: use 'sides', 'rings', 'tokens:K', a step count or a list of sizes"
    )


def build_order(name: str, grid: int, schedule: Schedule = None, seed: int = 0) -> GenerationOrder:
    """Build an order by name.

    Args:
        name: "raster" (identity), "spiral" (centre-outward, EAR) or "random" (seeded permutation).
        grid: n for an n x n token grid.
        schedule: see `schedule_sizes`; default one token per step for raster/random, "sides" for spiral.
        seed: permutation seed of the random order.
    """
    length = grid * grid
    if name == "raster":
        perm = torch.arange(length)
    elif name == "spiral":
        perm = sp.spiral_permutation(grid)
    elif name == "random":
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(length, generator=g)
    else:
        raise ValueError(f"unknown order {name!r}; choose one of {ORDERS}")
    default = "sides" if name == "spiral" else "tokens:1"
    return GenerationOrder(perm, tuple(schedule_sizes(schedule, grid, default)), grid, name)


@dataclass(frozen=True)
class Step:
    """One sampling pass: the sequence positions whose real tokens are fed and those predicted.

    cls: the pass starts with the class token (the first pass). In next_any mode the predicted positions
    are fed as [MASK] slots; in next_token mode the logits of the last fed slot predict the next token.
    """

    fed: range
    predicted: range
    cls: bool


def step_plan(order: GenerationOrder, mode: str, prefix_len: int = 0) -> list[Step]:
    """The passes that sample `order` after `prefix_len` known tokens (one pass per group, or per token).

    Args:
        order: generation order; in next_token mode its grouping is ignored (one token per pass).
        mode: "next_token" or "next_any".
        prefix_len: known leading sequence tokens; in next_any mode it must be a group boundary.
    """
    length = order.length
    if not 0 <= prefix_len < length:
        raise ValueError(f"prefix length must be in [0, {length}), got {prefix_len}")
    if mode == "next_token":
        first = Step(range(0, prefix_len), range(prefix_len, prefix_len + 1), True)
        return [first] + [
            Step(range(t - 1, t), range(t, t + 1), False) for t in range(prefix_len + 1, length)
        ]
    if mode != "next_any":
        raise ValueError(f"unknown mode {mode!r}")
    bounds = order.bounds
    if prefix_len not in bounds:
        raise ValueError(
            f"prefix of {prefix_len} tokens does not end on a step boundary of {list(order.group_sizes)}"
        )
    k = bounds.index(prefix_len)
    steps = [Step(range(0, prefix_len), range(bounds[k], bounds[k + 1]), True)]
    for g in range(k + 1, order.num_steps):
        steps.append(Step(range(bounds[g - 1], bounds[g]), range(bounds[g], bounds[g + 1]), False))
    return steps
