"""Centre-outward square spiral (EAR) and its step schedules.

The spiral starts at cell ((n-1)//2, (n-1)//2) and moves right, down, left, up with run lengths
1, 1, 2, 2, 3, 3, ... so that after i*i (or i*(i+1)) cells the visited region is an i x i (or i x (i+1))
rectangle. Schedules are lists of group sizes (tokens per step) along that sequence.
"""

from __future__ import annotations

import itertools
import math

import torch

_DIRECTIONS = ((0, 1), (1, 0), (0, -1), (-1, 0))  # right, down, left, up (row, col deltas)


def spiral_cells(n: int) -> list[tuple[int, int]]:
    """(row, col) of each spiral position on an n x n grid."""
    if n < 1:
        raise ValueError(f"spiral grid size must be >= 1, got {n}")
    r = c = (n - 1) // 2
    cells = [(r, c)]
    run, turn = 1, 0
    while len(cells) < n * n:
        dr, dc = _DIRECTIONS[turn % 4]
        for _ in range(run):
            r, c = r + dr, c + dc
            cells.append((r, c))
            if len(cells) == n * n:
                break
        turn += 1
        if turn % 2 == 0:  # every second turn the run grows: 1, 1, 2, 2, 3, 3, ...
            run += 1
    return cells


def spiral_permutation(n: int) -> torch.Tensor:
    """Raster index of the cell at each spiral position, (n*n,) int64 (EAR's `spiral_indices`)."""
    return torch.tensor([r * n + c for r, c in spiral_cells(n)], dtype=torch.long)


def sides_schedule(n: int) -> list[int]:
    """Official EAR schedule: 2n-1 steps 1,1,2,2,...,n-1,n-1,n (one new side of the rectangle each)."""
    return [s for i in range(1, n) for s in (i, i)] + [n]


def rings_schedule(n: int) -> list[int]:
    """n steps of 1,3,5,...,2n-1: one L-shaped ring (two sides) each; boundaries k*k."""
    return [2 * i - 1 for i in range(1, n + 1)]


def constant_schedule(length: int, tokens_per_step: int) -> list[int]:
    """`tokens_per_step` tokens each step (the last step takes the remainder)."""
    if tokens_per_step < 1:
        raise ValueError(f"tokens_per_step must be >= 1, got {tokens_per_step}")
    full, rest = divmod(length, tokens_per_step)
    return [tokens_per_step] * full + ([rest] if rest else [])


def steps_schedule(length: int, steps: int) -> list[int]:
    """`steps` contiguous groups whose sizes grow like the perimeter reached so far.

    Boundaries are round(length * (i/steps)^2): the side of the covered square grows linearly per step,
    so each step adds a ring proportional to the current perimeter (as `sides` does for 2n-1 steps).
    """
    if not 1 <= steps <= length:
        raise ValueError(f"number of steps must be in [1, {length}], got {steps}")
    bounds = [0]
    for i in range(1, steps + 1):
        b = round(length * (i / steps) ** 2)
        # keep at least one token per step while leaving one for each remaining step
        b = max(b, bounds[-1] + 1)
        b = min(b, length - (steps - i))
        bounds.append(b)
    return [b - a for a, b in itertools.pairwise(bounds)]


def random_partition(
    length: int,
    generator: torch.Generator,
    min_steps: int = 1,
    max_steps: int | None = None,
    growing: bool = True,
) -> list[int]:
    """A random contiguous partition of `length` positions, for any-schedule training.

    The step count is drawn uniformly from [min_steps, max_steps]. With `growing=True` the boundaries are
    drawn in sqrt-space (as `steps_schedule` places them) so groups grow with the perimeter like the
    schedules used at sampling time; otherwise the cut points are uniform.
    """
    max_steps = length if max_steps is None else max_steps
    if not 1 <= min_steps <= max_steps <= length:
        raise ValueError(f"need 1 <= min_steps <= max_steps <= {length}, got {min_steps}, {max_steps}")
    steps = int(torch.randint(min_steps, max_steps + 1, (1,), generator=generator))
    if steps == 1:
        return [length]
    if growing:
        u = torch.rand(4 * steps, generator=generator)
        cand = torch.unique((u * u * length).long().clamp(1, length - 1))
    else:
        cand = torch.arange(1, length)
    pick = cand[torch.randperm(len(cand), generator=generator)[: steps - 1]]
    bounds = [0, *sorted(int(b) for b in pick), length]
    return [b - a for a, b in itertools.pairwise(bounds)]


def square_prefix(sizes: list[int], k: int) -> int:
    """Number of steps whose cumulative size is exactly k*k (the first k x k square); error if none."""
    total = 0
    for i, s in enumerate(sizes):
        total += s
        if total == k * k:
            return i + 1
    raise ValueError(f"the schedule has no step boundary at {k}x{k}={k * k} tokens; use 'sides' or 'rings'")


def is_square(x: int) -> bool:
    return math.isqrt(x) ** 2 == x
