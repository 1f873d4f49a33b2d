"""What the app runs (argen.apps.store, no Gradio needed): requests over the shipped models return images
and the numbers of the run; inputs the models cannot run are ValueErrors with what to do."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from argen.apps import store as st
from argen.models.checkpoints import load_model, read_meta
from argen.models.pretrained import save_pretrained
from argen.sampling.extend import extension_canvas


@pytest.fixture(scope="module")
def store() -> st.ModelStore:
    return st.ModelStore(st.AppConfig(preload=False))


def test_store_offers_the_shipped_generators_with_their_tokenizers(store: st.ModelStore) -> None:
    assert {"ear_fmnist", "ear_any_fmnist", "raster_fmnist", "var_fmnist", "actvar_fmnist"} <= set(
        store.generators
    )
    assert store.tokenizers == ["msvq2_fmnist", "vq2_fmnist"]
    assert store.tokenizer_for("ear_any_fmnist") == "vq2_fmnist"
    assert store.tokenizer_for("actvar_fast_fmnist") == "msvq2_fmnist"
    assert store.default == "ear_any_fmnist"
    assert store.defaults("ear_any_fmnist") == (8, 2.5, 1.0)  # any-schedule EAR starts at 8 passes; own CFG
    assert store.defaults("ear_fmnist") == (0, 2.5, 1.0)  # trained on its own 31-pass schedule
    assert store.defaults("var_fmnist") == (0, 3.5, 1.0)  # the CFG scale its sweep chose
    assert ("raster_fmnist (raster)", "raster_fmnist") in st.describe(store, store.generators)


def test_ear_request_returns_grid_growth_and_costs(store: st.ModelStore) -> None:
    result = st.sample(store, "ear_any_fmnist", "0,7", per_class=2, passes=4, seed=3)
    grid, gif = Image.open(result.grid), Image.open(result.frames)
    assert grid.size == (3 * (2 * 34 + 2), 3 * (2 * 34 + 2))  # 2 classes x 2 draws, 32 px + 2 px pad, x3
    assert gif.n_frames == 4 and gif.size == (3 * (2 * 34 + 2), 3 * 36)  # a frame per pass, a row
    stats = result.stats
    assert (stats["model"], stats["images"], stats["passes"], stats["seed"]) == ("ear_any_fmnist", 4, 4, 3)
    assert stats["gflops_per_image"] == pytest.approx(
        store.pipeline(store.generate_config("ear_any_fmnist", schedule=4)).cost()["gflops"], 1e-3
    )
    # no CFG given: the model's own (its folder's 2.5), as `argen sample` takes it, not the family's 2.0
    assert stats["cfg_scale"] == 2.5 and stats["sampling_s"] > 0 and result.warnings == []
    assert (stats["dtype"], stats["device"]) == (store.dtype, "cpu")
    again = st.sample(store, "ear_any_fmnist", "0,7", per_class=2, passes=4, seed=3)
    assert torch.equal(_pixels(result.grid), _pixels(again.grid))  # same seed, same images
    other = st.sample(store, "ear_any_fmnist", "0,7", per_class=2, passes=4, seed=4)
    assert not torch.equal(_pixels(result.grid), _pixels(other.grid))


def test_old_request_folders_are_deleted(store: st.ModelStore) -> None:
    paths = [Path(st.sample(store, "ear_any_fmnist", "0", passes=2, frames=False).grid) for _ in range(3)]
    folders = [store.output_folder() for _ in range(st.KEEP)]
    assert not paths[0].exists() and all(f.is_dir() for f in folders)
    assert len(list(folders[0].parent.iterdir())) == st.KEEP


def test_var_request_returns_a_scale_strip(store: st.ModelStore) -> None:
    result = st.sample(store, "var_fmnist", "1", per_class=1, seed=0)
    scales = len(store.model("var_fmnist").config.patch_nums)
    assert result.stats["passes"] == scales and result.stats["cfg_scale"] == 3.5  # the model's own
    assert Image.open(result.frames).size == (
        3 * (scales * 34 + 2),
        3 * 36,
    )  # one image, one column per scale


def test_side_by_side_runs_both_models_on_the_same_seed(store: st.ModelStore) -> None:
    left, right = st.compare(store, "ear_any_fmnist", "var_fmnist", "3,4", per_class=1, seed=5)
    assert (left.stats["passes"], left.stats["cfg_scale"]) == (8, 2.5)  # each model's own CFG scale
    assert (right.stats["passes"], right.stats["cfg_scale"]) == (
        len(store.model("var_fmnist").config.patch_nums),
        3.5,
    )
    assert left.stats["seed"] == right.stats["seed"] == 5 and left.frames is None
    same = st.sample(store, "ear_any_fmnist", "3,4", 1, 8, 2.5, None, 5, False)
    assert torch.equal(_pixels(left.grid), _pixels(same.grid))


def test_fixed_schedule_ear_at_other_passes_warns(store: st.ModelStore) -> None:
    result = st.sample(store, "ear_fmnist", "2", passes=8, frames=False)
    assert result.frames is None and result.stats["passes"] == 8
    assert "trained on the 'sides' schedule only" in result.warnings[0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"classes": "42"}, r"class id\(s\) \[42\] out of range: this model has classes 0..9"),
        ({"classes": "shoe"}, "classes: give comma-separated whole numbers such as 0,3,7"),
        ({"per_class": 2.5}, "images per class must be a whole number >= 1, got 2.5"),
        ({"per_class": 0}, "images per class must be a whole number >= 1"),
        ({"classes": "", "per_class": 17}, "170 images asked; this app makes at most 160 per request"),
        ({"passes": -1}, "passes must be a whole number >= 0"),
        ({"passes": 300}, r"number of steps must be in \[1, 256\], got 300"),
        ({"temperature": 0.0}, "temperature must be a number > 0"),
        ({"cfg_scale": -1.0}, r"the guidance scale \(CFG\) must be >= 0 \(1 = off\), got -1.0"),
        ({"name": "var_fmnist", "passes": 8}, "--schedule applies to raster/EAR models; var_fmnist is a var"),
        ({"name": "nope"}, "unknown model 'nope'"),
    ],
)
def test_bad_inputs_are_explained(store: st.ModelStore, kwargs: dict, message: str) -> None:
    args = {"name": "ear_any_fmnist", "classes": "0", "passes": 4, **kwargs}
    with pytest.raises(ValueError, match=message):
        st.sample(store, **args)


def test_extend_uses_the_loaded_ear(store: st.ModelStore) -> None:
    image, report = st.extend(store, "ear_fmnist", "0,1", centre=8, canvas=20)
    assert report["mode"] == "extension" and report["canvas_tokens"] == 20
    assert (report["dtype"], report["device"]) == (store.dtype, "cpu")
    assert Image.open(image).size == (3 * (3 * (40 + 2) + 2), 3 * (2 * (40 + 2) + 2))  # 20 tokens = 40 px


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "var_fmnist"}, "extension needs an EAR"),
        ({"images": "first"}, "images \\(test-set indices\\): give comma-separated whole numbers"),
        ({"images": ""}, "images: give one or more whole numbers"),
        ({"images": "0,10000"}, r"--images \[10000\]: the Fashion-MNIST test split has images 0..9999"),
        ({"cfg_scale": -2.0}, r"the guidance scale \(CFG\) must be >= 0 \(1 = off\), got -2.0"),
        ({"centre": 16, "canvas": 16}, r"the kept centre \(16 tokens\) fills the whole canvas \(16\)"),
        ({"centre": 2.5}, "the kept centre \\(tokens\\) must be a whole number >= 1, got 2.5"),
    ],
)
def test_bad_extend_inputs_are_explained(store: st.ModelStore, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        st.extend(store, **{"name": "ear_fmnist", "images": "0", **kwargs})


def test_every_extend_slider_setting_runs_or_is_explained(store: st.ModelStore) -> None:
    """The page's sliders (centre 1..16, canvas 16..32 tokens): only a centre filling the canvas is refused
    (checked without sampling); the corners of the rest run."""
    model = store.model("ear_fmnist")
    refused = []
    for centre, canvas in itertools.product(range(1, 17), range(16, 33)):
        try:
            extension_canvas(model, centre, canvas)
        except ValueError:
            refused.append((centre, canvas))
    assert refused == [(16, 16)]
    for centre, canvas in [(1, 16), (15, 16), (16, 17), (1, 32)]:
        _, report = st.extend(store, "ear_fmnist", "7", centre=centre, canvas=canvas)
        assert (report["centre_tokens"], report["canvas_tokens"]) == (centre, canvas)


def test_local_folder_models_are_offered(tmp_path) -> None:
    # with its training record (which tokenizer it was trained with) it is paired among the shipped VQs
    record = read_meta("ear_any_fmnist")["trained_with"]
    folder = save_pretrained(load_model("ear_any_fmnist"), tmp_path / "my_ear", trained_with=record)
    local = st.ModelStore(st.AppConfig(models=[str(folder)], preload=False))
    assert str(folder) in local.generators and local.tokenizer_for(str(folder)) == "vq2_fmnist"
    bare = save_pretrained(load_model("ear_any_fmnist"), tmp_path / "bare_ear")  # no record
    alone = st.ModelStore(st.AppConfig(models=[str(bare)], preload=False))
    assert alone.tokenizer_for(str(bare)) == "vq2_fmnist"  # the only VQ tokenizer there is
    other = save_pretrained(load_model("vq2_fmnist"), tmp_path / "other_vq")  # a second one: ambiguous
    two = st.ModelStore(st.AppConfig(models=[str(bare)], tokenizers=[str(other)], preload=False))
    with pytest.raises(ValueError, match=r"2 vq tokenizers fit .* start the app with --tokenizer FILE"):
        two.tokenizer_for(str(bare))
    assert st.sample(local, str(folder), "5", passes=4).stats["images"] == 1
    with pytest.raises(ValueError, match="is a vq model, not a generator"):
        st.ModelStore(st.AppConfig(models=["vq2_fmnist"], preload=False))


def test_page_builds_without_serving(store: st.ModelStore) -> None:
    pytest.importorskip("gradio")
    from argen.apps.app import build_app

    page = build_app(store)
    assert page.title == "argen"


def _pixels(path: str) -> torch.Tensor:
    return torch.from_numpy(np.asarray(Image.open(path).convert("L")).copy())


def test_core_and_cli_do_not_import_gradio() -> None:
    import subprocess

    code = "import sys, argen.cli, argen.sampling.pipeline, argen.apps.store; print('gradio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_app_without_gradio_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from argen.cli import main

    monkeypatch.setitem(sys.modules, "gradio", None)  # import fails as if not installed
    monkeypatch.delitem(sys.modules, "argen.apps.app", raising=False)
    with pytest.raises(SystemExit) as exc:
        main(["app", "--lazy"])
    assert exc.value.code == 2
    assert "the app needs Gradio: pip install -e '.[app]'" in capsys.readouterr().err
