"""Generation orders (raster, spiral + schedules, random) as data."""

from argen.orders.core import ORDERS, GenerationOrder, build_order, schedule_sizes
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
    "build_order",
    "random_partition",
    "rings_schedule",
    "schedule_sizes",
    "sides_schedule",
    "spiral_cells",
    "spiral_permutation",
    "square_prefix",
    "steps_schedule",
]
