"""Generation orders (raster, spiral + schedules, random) as data."""

from argen.orders.core import ORDERS, GenerationOrder, Step, build_order, schedule_sizes, step_plan
from argen.orders.spiral import (
    random_partition,
    rings_schedule,
    sides_schedule,
    spiral_cells,
    spiral_permutation,
    square_prefix,
    steps_schedule,
)

__all__ = [
    "ORDERS",
    "GenerationOrder",
    "Step",
    "build_order",
    "random_partition",
    "rings_schedule",
    "schedule_sizes",
    "sides_schedule",
    "spiral_cells",
    "spiral_permutation",
    "square_prefix",
    "step_plan",
    "steps_schedule",
]
