"""One request per action, as `argen sample` / `argen extend`, the app's tabs and the HTTP server take it.

Each front end turns its inputs (flags, page fields, JSON) into a request and runs it through the same
`Pipeline`, so a value is checked once, in one place, with one message, and a value left out is the model's
own (its folder's "sampling" settings over its family's defaults), exactly as `argen sample` takes it.

Where each check lives: CFG, temperature, top-k and top-p in `SamplingConfig`; the schedule, order, sampler
and dtype in `GenerateConfig` and the model's family (`Pipeline`); class ids in `Pipeline.check_labels`;
the kept centre against the model's grid and the canvas in `extension_canvas`; test-image indices in
`argen.apps.extend`; what only a request has (images per class, whole numbers, non-empty lists) here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from argen.sampling.pipeline import GenerateConfig


def whole(value: Any, what: str, lo: int | None = 0) -> int:
    """`value` as an int: 3 or 3.0 (a JSON or page number), never 2.5, nan, text or a bool; >= lo if given."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not (number and math.isfinite(value) and value == int(value) and (lo is None or value >= lo)):
        raise ValueError(f"{what} must be a whole number{'' if lo is None else f' >= {lo}'}, got {value!r}")
    return int(value)


def ids(values: list[Any], what: str) -> list[int]:
    """A non-empty list of whole numbers (class ids, image indices); their range is the model's or data's."""
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ValueError(f"{what}: give one or more whole numbers such as 0,3,7 (got {values!r})")
    return list(values)


def parse_ids(text: str, what: str) -> list[int] | None:
    """Comma-separated ids typed in a page ("0, 3,7"); None when empty."""
    try:
        parsed = [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError as e:
        raise ValueError(f"{what}: give comma-separated whole numbers such as 0,3,7 (got {text!r})") from e
    return parsed or None


@dataclass
class SampleRequest:
    """Class-conditional images of one generator.

    generate: the generator and how it samples; sampling values it leaves out are the model's own.
    classes: class ids (None = every class the model has). per_class: images of each class.
    Image i is draw i % per_class of class i // per_class, drawn from the stream (seed, i): `argen sample`'s
    grid (a row per class) and the app's (a column per class) show the same images.
    """

    generate: GenerateConfig
    classes: list[int] | None = None
    per_class: int = 1

    def __post_init__(self) -> None:
        self.per_class = whole(self.per_class, "images per class", lo=1)
        if self.classes is not None:
            self.classes = ids(self.classes, "classes")

    def labels(self, num_classes: int) -> list[int]:
        """The class of each image, in request order (checked against the model by the pipeline)."""
        classes = range(num_classes) if self.classes is None else self.classes
        return [c for c in classes for _ in range(self.per_class)]


@dataclass
class ExtendRequest:
    """Keep the K x K centre tokens of Fashion-MNIST test images and let an EAR model generate the rest.

    generate: the EAR model and how it samples; sampling values it leaves out are the model's own.
    centre: K, the kept centre's side in tokens. canvas: G, the canvas side in tokens; None or the model's
        grid = inpainting of the border; larger = extension beyond the training canvas (needs a model with
        rope_mode "grid").
    images: Fashion-MNIST test-set indices to start from. classes: class per image (None = their labels).
    """

    generate: GenerateConfig
    centre: int = 8
    canvas: int | None = None
    images: list[int] = field(default_factory=lambda: [0, 1, 2, 3])
    classes: list[int] | None = None

    def __post_init__(self) -> None:
        self.centre = whole(self.centre, "the kept centre (tokens)", lo=1)
        if self.canvas is not None:
            self.canvas = whole(self.canvas, "the canvas (tokens)", lo=1)
        self.images = ids(self.images, "images")
        if self.classes is not None:
            self.classes = ids(self.classes, "classes")
            if len(self.classes) != len(self.images):
                raise ValueError("give one class per image (--classes) or none")
