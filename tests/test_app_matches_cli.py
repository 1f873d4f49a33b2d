"""The app runs the CLI's code path: for the same inputs and seed, each tab's pictures are `argen sample`'s /
`argen extend`'s pixel for pixel (the sample tab's batches hold other images than the CLI's: up to one grey
level of decoder rounding), in bf16 and in fp32, and values left empty are the model's own in both."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from argen.apps import store as st
from argen.cli import main
from argen.device import DTYPES

SIDE, PAD, SCALE = 32, 2, 3  # a Fashion-MNIST image in a grid: 32 px, 2 px padding, shown 3x


@pytest.fixture(scope="module", params=["bf16", "fp32"])
def store(request: pytest.FixtureRequest) -> st.ModelStore:
    return st.ModelStore(st.AppConfig(dtype=request.param, preload=False))


def _cli(store: st.ModelStore, out: Path, *argv: str) -> dict:
    """Run `argen` on the app's device and dtype into `out`; the run's record (sample.json's "run")."""
    main([*argv, "--device", "cpu", "--dtype", store.dtype, "--out", str(out)])
    report = out / "sample.json"
    return json.loads(report.read_text())["run"] if report.is_file() else {}


def _cells(path: str | Path, rows: int, cols: int) -> np.ndarray:
    """(rows, cols, h, w) pixels of the images of a grid PNG."""
    step = (SIDE + PAD) * SCALE
    px = np.asarray(Image.open(path).convert("L"))[PAD * SCALE :, PAD * SCALE :]
    px = px[: rows * step, : cols * step].reshape(rows, step, cols, step).transpose(0, 2, 1, 3)
    return px[:, :, : SIDE * SCALE, : SIDE * SCALE]


def test_sample_tab_equals_argen_sample(store: st.ModelStore, tmp_path: Path) -> None:
    # every class, 4 each: two batches (32 + 8) whose rows differ between the two layouts; CFG and
    # temperature boxes cleared: the model's own values, in both
    app = st.sample(store, "ear_any_fmnist", "", 4, passes=4, cfg_scale=None, temperature=None, seed=5)
    report = _cli(store, tmp_path, "sample", "--model", "ear_any_fmnist", "--n-per-class", "4",
                  "--schedule", "4", "--seed", "5")  # fmt: skip
    # the app shows a column per class, the CLI a row per class: the same images. Tokens are drawn per image,
    # but the conv decoder's float sums depend on which images share its batch (the two layouts batch them
    # differently), so a pixel may round to the neighbouring grey level (9 of 368,640 pixels with the
    # shipped any-schedule EAR in fp32); `decode_alone` removes even that, for servers that need it
    cli = _cells(tmp_path / "samples.png", 10, 4).transpose(1, 0, 2, 3)
    diff = np.abs(_cells(app.grid, 4, 10).astype(int) - cli.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-4
    assert not np.array_equal(cli[0, 0], cli[1, 0])  # two different draws, so the comparison means something
    sampling = report["sampling"]
    assert (app.stats["cfg_scale"], app.stats["temperature"]) == (
        sampling["cfg_scale"],
        sampling["temperature"],
    )
    assert app.stats["cfg_scale"] == 2.5  # ear_any_fmnist's own, not its family's 2.0
    assert (app.stats["dtype"], app.stats["device"]) == (store.dtype, "cpu")
    assert next(store.model("ear_any_fmnist").parameters()).dtype == DTYPES[store.dtype]


def test_side_by_side_tab_equals_argen_sample(store: st.ModelStore, tmp_path: Path) -> None:
    left, right = st.compare(store, "ear_any_fmnist", "var_fmnist", "1,4", per_class=1, seed=2)
    for result, extra in ((left, ["--schedule", "8"]), (right, [])):  # the page's starting passes
        out = tmp_path / result.stats["model"]
        report = _cli(store, out, "sample", "--model", result.stats["model"], "--classes", "1,4",
                      "--n-per-class", "1", "--seed", "2", *extra)  # fmt: skip
        cli = _cells(out / "samples.png", 2, 1).transpose(1, 0, 2, 3)
        assert np.array_equal(_cells(result.grid, 1, 2), cli)
        assert result.stats["cfg_scale"] == report["sampling"]["cfg_scale"]
    assert (left.stats["cfg_scale"], right.stats["cfg_scale"]) == (2.5, 3.5)


def test_extend_tab_equals_argen_extend(store: st.ModelStore, tmp_path: Path) -> None:
    image, report = st.extend(store, "ear_fmnist", "0,5", centre=6, canvas=18, cfg_scale=None, seed=3)
    _cli(store, tmp_path, "extend", "--model", "ear_fmnist", "--images", "0,5", "--centre", "6",
         "--canvas", "18", "--seed", "3")  # fmt: skip
    assert Path(image).read_bytes() == (tmp_path / "extend.png").read_bytes()
    assert (report["dtype"], report["device"]) == (store.dtype, "cpu")


@pytest.mark.parametrize(
    ("app", "argv"),
    [
        ({"cfg_scale": -2.0}, ["--cfg", "-2"]),
        ({"centre": 16, "canvas": 16}, ["--centre", "16", "--canvas", "16"]),
        ({"images": "0,10000"}, ["--images", "0,10000"]),
    ],
)
def test_a_bad_extend_value_has_one_message(
    store: st.ModelStore, tmp_path: Path, capsys: pytest.CaptureFixture, app: dict, argv: list[str]
) -> None:
    with pytest.raises(ValueError) as page:
        st.extend(store, "ear_fmnist", **{"images": "0", **app})
    with pytest.raises(SystemExit):
        _cli(store, tmp_path, "extend", "--model", "ear_fmnist", "--images", "0", *argv)
    assert str(page.value) in capsys.readouterr().err
