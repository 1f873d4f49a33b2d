"""Quality-vs-speed plot (FID vs img/s, log x) from result JSONs (evaluate + bench outputs merged per run).

Each result is a dict (or a JSON file holding one) with a quality value, a speed value and a label; values
are looked up by dotted keys ("fid", "bench.img_per_s", ...). Results sharing a `group` (e.g. one EAR model
at several step counts) are drawn in one colour and joined by a line, sorted by speed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from argen.io import atomic_write


def lookup(result: dict[str, Any], key: str) -> Any:
    """`result["a"]["b"]` for key "a.b"; None when any part is missing."""
    node: Any = result
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _speed(result: dict[str, Any], x_key: str) -> Any:
    """`x_key`; for an `argen eval --model` report without it, n / generator.sample_seconds."""
    x = lookup(result, x_key)
    seconds = lookup(result, "generator.sample_seconds")
    if x is None and x_key == "img_per_s" and isinstance(seconds, int | float) and seconds > 0:
        return result["n"] / seconds
    return x


def _load(result: dict[str, Any] | str | Path) -> dict[str, Any]:
    if isinstance(result, dict):
        return result
    return json.loads(Path(result).read_text())


def _annotate(fig, ax, points: list[tuple]) -> None:
    """Label each point at the first of a few offsets whose text box overlaps no label placed before."""
    from matplotlib.transforms import Bbox

    fig.tight_layout()  # final geometry first, so the boxes compared below are where the text will be
    renderer = fig.canvas.get_renderer()
    markers = ax.transData.transform([(p[0], p[1]) for p in points]) if points else []
    placed = [Bbox.from_extents(mx - 4, my - 4, mx + 4, my + 4) for mx, my in markers]
    offsets = ((5, 4, "left"), (5, -11, "left"), (-5, 4, "right"), (-5, -11, "right"), (5, 14, "left"))
    for x, y, label, _ in sorted(points, key=lambda p: (p[0], p[1])):
        for dx, dy, ha in offsets:
            ann = ax.annotate(label, (x, y), textcoords="offset points", xytext=(dx, dy), ha=ha, fontsize=8)
            box = ann.get_window_extent(renderer).expanded(1.05, 1.3)
            if not any(box.overlaps(other) for other in placed):
                break
            ann.remove()
        else:  # every offset collides: keep the first
            ann = ax.annotate(label, (x, y), textcoords="offset points", xytext=offsets[0][:2], fontsize=8)
            box = ann.get_window_extent(renderer)
        placed.append(box)


def plot_quality_speed(
    results: Sequence[dict[str, Any] | str | Path],
    out: str | Path,
    x_key: str = "img_per_s",
    y_key: str = "fid",
    label_key: str = "name",
    group_key: str = "group",
    title: str | None = None,
    floor: float | None = None,
) -> Path:
    """Scatter quality (y, lower is better) against throughput (x, log scale) and save a PNG.

    Args:
        results: dicts or JSON paths. Entries missing x or y are skipped (a ValueError if all are). An
            `argen eval --model` report without img/s uses n / generator.sample_seconds (incl. warm-up).
        out: PNG path. x_key / y_key / label_key / group_key: dotted keys into each result.
        title: plot title. floor: draw the real-vs-real floor as a dashed horizontal line (e.g. the FID floor
            at the evaluated sample count); when None, the first result's `floor.<y_key>` is used if present.

    Returns:
        The PNG path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [_load(r) for r in results]
    points = [
        (
            _speed(r, x_key),
            lookup(r, y_key),
            str(lookup(r, label_key) or lookup(r, "generator.model") or f"run {i}"),
            str(lookup(r, group_key) or lookup(r, label_key) or lookup(r, "generator.model") or f"run {i}"),
        )
        for i, r in enumerate(rows)
    ]
    points = [
        p for p in points if isinstance(p[0], int | float) and isinstance(p[1], int | float) and p[0] > 0
    ]
    if not points:
        raise ValueError(
            f"no result has both {x_key!r} (> 0) and {y_key!r}; check the keys of the JSON files"
        )
    if floor is None and rows:
        floor = lookup(rows[0], f"floor.{y_key}")

    fig, ax = plt.subplots(figsize=(7, 4.8), dpi=120)
    groups = list(dict.fromkeys(p[3] for p in points))
    cmap = plt.get_cmap("tab10")
    for gi, g in enumerate(groups):
        pts = [p for p in points if p[3] == g]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o", color=cmap(gi % 10), label=g, ms=6)
    if isinstance(floor, int | float):
        ax.axhline(floor, ls="--", color="grey", lw=1, label=f"real-vs-real floor ({floor:.2f})")
    xs = [p[0] for p in points]
    log_x = max(xs) / min(xs) > 10  # a log axis only pays when speeds span a decade or more
    if log_x:
        ax.set_xscale("log")
    ax.margins(x=0.1)  # room for the labels of the outermost points
    _annotate(fig, ax, [p for p in points if p[2] != p[3]])
    ax.set_xlabel(f"{x_key} ({'log scale, ' if log_x else ''}higher is faster)")
    ax.set_ylabel(f"{y_key} (lower is better)")
    ax.grid(True, which="both", alpha=0.3)
    return _finish(fig, ax, title, out)


def plot_learning_curves(
    curves: dict[str, list[tuple[float, float]]],
    out: str | Path,
    x_label: str = "training images seen",
    y_label: str = "FID (lower is better)",
    title: str | None = None,
    floor: float | None = None,
) -> Path:
    """One line per model through its (x, y) points (e.g. images seen, FID at each checkpoint); save a PNG.

    Args:
        curves: model label -> points; each model's points are drawn sorted by x.
        out: PNG path. floor: the real-vs-real floor, drawn as a dashed line.

    Returns:
        The PNG path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not any(curves.values()):
        raise ValueError("no points to plot: every curve is empty")
    fig, ax = plt.subplots(figsize=(7, 4.8), dpi=120)
    for label, points in curves.items():
        xs, ys = zip(*sorted(points), strict=True) if points else ((), ())
        ax.plot(xs, ys, "o-", label=label, ms=5)
    if isinstance(floor, int | float):
        ax.axhline(floor, ls="--", color="grey", lw=1, label=f"real-vs-real floor ({floor:.2f})")
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.grid(True, alpha=0.3)
    return _finish(fig, ax, title, out)


def _finish(fig, ax, title: str | None, out: str | Path) -> Path:
    """Legend and title, then the figure written atomically as `out` (.png) and closed."""
    import matplotlib.pyplot as plt

    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    out = Path(out).with_suffix(".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda p: fig.savefig(p, format="png"))
    plt.close(fig)
    return out
