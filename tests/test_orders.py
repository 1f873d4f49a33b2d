"""Generation orders: permutations, spiral geometry, schedules, random partitions, step plans."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from argen.orders import (
    build_order,
    random_partition,
    rings_schedule,
    schedule_sizes,
    sides_schedule,
    spiral_cells,
    spiral_permutation,
    step_plan,
    steps_schedule,
)


def test_spiral_n4_matches_the_stated_layout():
    order = build_order("spiral", 4)
    expected = torch.tensor([[6, 7, 8, 9], [5, 0, 1, 10], [4, 3, 2, 11], [15, 14, 13, 12]])
    assert torch.equal(order.inverse_L.view(4, 4), expected)


def test_official_spiral_permutation(fixtures_dir):
    ref = load_file(str(fixtures_dir / "ear_ref_a.safetensors"))["out.spiral_indices"]
    assert torch.equal(spiral_permutation(16), ref)


@pytest.mark.parametrize("name", ["raster", "spiral", "random"])
@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 16])
def test_orders_are_permutations_with_stated_first_cell(name, n):
    order = build_order(name, n, seed=3)
    assert torch.equal(order.perm_L.sort().values, torch.arange(n * n))
    tokens = torch.randint(0, 100, (2, n * n))
    assert torch.equal(order.to_raster(order.to_sequence(tokens)), tokens)
    if name == "raster":
        assert torch.equal(order.perm_L, torch.arange(n * n))
    if name == "spiral":
        c = (n - 1) // 2
        assert int(order.perm_L[0]) == c * n + c


def test_random_order_is_seeded():
    a, b, c = (
        build_order("random", 6, seed=1),
        build_order("random", 6, seed=1),
        build_order("random", 6, seed=2),
    )
    assert torch.equal(a.perm_L, b.perm_L) and not torch.equal(a.perm_L, c.perm_L)


@pytest.mark.parametrize("n", [2, 3, 4, 7, 10, 16])
def test_spiral_prefixes_are_squares_and_rectangles(n):
    cells = spiral_cells(n)
    for k in range(1, n + 1):
        for count, (h, w) in ((k * k, (k, k)), (k * (k + 1), (k, k + 1))):
            if count > n * n:
                continue
            rows = {r for r, _ in cells[:count]}
            cols = {c for _, c in cells[:count]}
            assert len(rows) * len(cols) == count  # a full rectangle...
            assert sorted((len(rows), len(cols))) == sorted((h, w))  # ...of the expected size
            assert max(rows) - min(rows) + 1 == len(rows) and max(cols) - min(cols) + 1 == len(cols)


@pytest.mark.parametrize("n", [1, 2, 4, 16])
def test_sides_and_rings_schedules(n):
    sides = sides_schedule(n)
    assert len(sides) == 2 * n - 1 and sum(sides) == n * n
    bounds = torch.tensor(sides).cumsum(0).tolist()
    assert bounds[0::2] == [i * i for i in range(1, n + 1)]
    assert bounds[1::2] == [i * (i + 1) for i in range(1, n)]
    rings = rings_schedule(n)
    assert torch.tensor(rings).cumsum(0).tolist() == [k * k for k in range(1, n + 1)]


def test_official_31_step_schedule():
    assert sides_schedule(16) == [
        1,
        1,
        2,
        2,
        3,
        3,
        4,
        4,
        5,
        5,
        6,
        6,
        7,
        7,
        8,
        8,
        9,
        9,
        10,
        10,
        11,
        11,
        12,
        12,
        13,
        13,
        14,
        14,
        15,
        15,
        16,
    ]


@pytest.mark.parametrize("steps", [1, 2, 8, 31, 100, 256])
def test_steps_schedule_has_the_target_count_and_grows(steps):
    sizes = steps_schedule(256, steps)
    assert len(sizes) == steps and sum(sizes) == 256 and min(sizes) >= 1
    if 1 < steps <= 64:  # sizes grow with the perimeter: the last group is the largest
        assert sizes[-1] >= sizes[0] and sizes[-1] == max(sizes)


def test_schedule_specs():
    assert schedule_sizes("tokens:1", 4) == [1] * 16
    assert schedule_sizes("tokens:5", 4) == [5, 5, 5, 1]
    assert schedule_sizes(4, 4) == steps_schedule(16, 4)
    assert schedule_sizes([4, 12], 4) == [4, 12]
    with pytest.raises(ValueError, match="unknown schedule"):
        schedule_sizes("spiralish", 4)
    with pytest.raises(ValueError, match="sum to 16"):
        build_order("spiral", 4, [4, 4])


def test_random_partitions_are_contiguous_and_within_bounds():
    g = torch.Generator().manual_seed(0)
    counts = set()
    for _ in range(200):
        sizes = random_partition(256, g, min_steps=4, max_steps=40)
        assert sum(sizes) == 256 and min(sizes) >= 1 and 4 <= len(sizes) <= 40
        counts.add(len(sizes))
    assert len(counts) > 10  # the step count really varies


@pytest.mark.parametrize("mode", ["next_token", "next_any"])
@pytest.mark.parametrize("prefix", [0, 4])
def test_step_plan_predicts_every_position_once(mode, prefix):
    order = build_order("spiral", 4, "rings")  # boundaries 1, 4, 9, 16
    steps = step_plan(order, mode, prefix)
    predicted = [j for st in steps for j in st.predicted]
    assert predicted == list(range(prefix, 16))
    assert steps[0].cls and not any(st.cls for st in steps[1:])
    fed = [j for st in steps for j in st.fed]
    assert fed == list(range(fed[-1] + 1)) if fed else prefix == 0
    if mode == "next_any":
        assert len(steps) == order.num_steps - order.bounds.index(prefix)
        with pytest.raises(ValueError, match="step boundary"):
            step_plan(order, mode, 5)
