"""`argen demo` on the shipped tokenizer and EAR model: every section written, times and costs reported."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from argen.apps.demo import ASSETS, DemoConfig, run_demo


@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
def test_demo_writes_grids_gif_extension_and_summary(tmp_path, dtype):
    assets = tmp_path / "assets"
    assets.mkdir()
    for name in ("vq2_fmnist", "ear_fmnist"):  # one generator keeps this test to seconds
        shutil.copytree(ASSETS / name, assets / name)
    out = tmp_path / "demo"
    summary = run_demo(DemoConfig(out=str(out), per_class=1, assets=str(assets), dtype=dtype))
    assert summary["dtype"] == summary["reconstruction"]["dtype"] == summary["extension"]["dtype"] == dtype
    assert json.loads((out / "summary.json").read_text()) == summary
    assert summary["reconstruction"]["psnr"] > 20.0
    (row,) = summary["generators"]
    assert row["name"] == "ear_fmnist" and row["steps"] == 31 and row["n"] == 10 and row["seconds"] > 0
    assert Image.open(row["image"]).size[0] > 0
    gif = Image.open(row["gif"])
    assert gif.n_frames >= 2  # the image grows from the centre over several frames
    assert Image.open(summary["side_by_side"]).size[0] > 0
    assert summary["extension"]["mode"] == "extension" and Image.open(summary["extension"]["image"])
