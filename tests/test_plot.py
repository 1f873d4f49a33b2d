"""Learning-curve plot: one line per model through its checkpoints' points."""

from __future__ import annotations

import pytest
from PIL import Image

from argen.eval.plot import plot_learning_curves


def test_learning_curves_draw_every_model_and_refuse_nothing(tmp_path):
    curves = {"raster": [(24e3, 60.0), (12e3, 80.0), (60e3, 40.0)], "EAR-31": [(12e3, 90.0), (60e3, 45.0)]}
    out = plot_learning_curves(curves, tmp_path / "curves", floor=15.8, title="t")
    assert out.suffix == ".png" and Image.open(out).size[0] > 100
    with pytest.raises(ValueError, match="no points"):
        plot_learning_curves({"raster": []}, tmp_path / "empty.png")
