"""End-to-end CLI checks on tiny random models: files written, costs reported, user errors explained."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from argen.cli import main
from argen.models.checkpoints import load_model, save_model
from argen.models.var import VAR, var_config
from argen.tokenizers.vqgan import VQModel, vq_config


def _init(model: torch.nn.Module) -> torch.nn.Module:
    model.init_weights()
    return model.eval()


def _gen(command: str, model: Path, tokenizer: Path, *flags: str, **options: object) -> list[str]:
    """`command --model M --tokenizer T --device cpu`, then `--flag`s and `--option value`s
    (`n_per_class=2` -> `--n-per-class 2`)."""
    args = [command, "--model", str(model), "--tokenizer", str(tokenizer), "--device", "cpu"]
    args += [f"--{flag}" for flag in flags]
    for name, value in options.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    return args


def _tokenize_folder(tokenizer: Path, root: Path, out: Path) -> None:
    args = {"tokenizer": tokenizer, "source": "imagefolder", "root": root, "out": out, "device": "cpu"}
    main(["tokenize", *(arg for name, value in args.items() for arg in (f"--{name}", str(value)))])


def _run(args: list[str], capsys: pytest.CaptureFixture) -> dict:
    main(args)
    out = capsys.readouterr().out
    return json.loads(out[out.index("{") :])


def test_ear_sample_writes_grid_gif_and_reports_passes(files: dict, tmp_path: Path, capsys) -> None:
    args = _gen("sample", files["ear"], files["vq"], "gif", "npz", classes="1,3", n_per_class=2, out=tmp_path)
    rep = _run(args, capsys)
    assert rep["steps"] == 31 and rep["n"] == 4  # official 'sides' schedule on 16x16
    assert Image.open(rep["grid"]).size[0] > 0
    gif = Image.open(rep["gif"])
    assert gif.n_frames == 31
    arr = np.load(rep["npz"])
    assert arr["arr_0"].shape == (4, 32, 32, 3) and arr["arr_1"].tolist() == [1, 1, 3, 3]


def test_any_schedule_changes_passes(files: dict, capsys) -> None:
    rep = _run(["flops", "--model", str(files["ear"]), "--schedule", "8"], capsys)
    rep31 = _run(["flops", "--model", str(files["ear"])], capsys)
    assert rep["steps"] == 8 and rep31["steps"] == 31
    assert 0 < rep["gflops"] < rep31["gflops"]  # fewer passes re-read fewer [MASK] slots


def test_var_sample_writes_scale_strip(files: dict, tmp_path: Path, capsys) -> None:
    rep = _run(
        _gen("sample", files["var"], files["msvq"], "gif", classes=0, n_per_class=3, out=tmp_path), capsys
    )
    assert rep["steps"] == 4
    assert Image.open(rep["strip"]).size[0] > Image.open(rep["strip"]).size[1]  # one column per scale


def test_extension_onto_a_larger_canvas(files: dict, tmp_path: Path, capsys) -> None:
    if not Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST not installed")
    args = _gen("extend", files["ear"], files["vq"], centre=6, canvas=20, images="0,1", out=tmp_path)
    rep = _run(args, capsys)
    assert rep["mode"] == "extension" and rep["canvas_tokens"] == 20
    w, h = Image.open(rep["image"]).size
    assert w > h  # three panels per row: original | kept centre | extended


@pytest.mark.parametrize(
    ("tokenizer", "extra", "message"),
    [("vq", ["--classes", "12"], "out of range"), ("msvq", [], "needs a vq tokenizer")],
)
def test_user_errors_are_explained(files, tmp_path, capsys, tokenizer: str, extra: list, message) -> None:
    with pytest.raises(SystemExit) as e:
        main([*_gen("sample", files["ear"], files[tokenizer], out=tmp_path), *extra])
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_corrupt_model_file_is_explained(files: dict, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(files["ear"].read_bytes()[:100])
    bad.with_suffix(".json").write_text(files["ear"].with_suffix(".json").read_text())
    with pytest.raises(SystemExit):
        main(["flops", "--model", str(bad)])
    assert "not a readable safetensors file" in capsys.readouterr().err


def test_convert_official_var_accepts_derivable_buffers(tmp_path: Path, capsys) -> None:
    var = _init(VAR(var_config("debug")))
    state = dict(var.state_dict())
    state["lvl_1L"] = torch.zeros(1, 30, dtype=torch.long)  # official derivable buffers: accepted, ignored
    state["attn_bias_for_masking"] = torch.zeros(1, 1, 30, 30)
    torch.save(state, tmp_path / "var_debug.pth")
    main(
        [
            "convert",
            "--official",
            str(tmp_path / "var_debug.pth"),
            "--kind",
            "var",
            "--preset",
            "debug",
            "--out",
            str(tmp_path / "conv"),
        ]
    )
    loaded = load_model(tmp_path / "conv.safetensors")
    for k, v in var.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v, rtol=0, atol=0)


def test_tokenize_imagefolder(tmp_path: Path, capsys) -> None:
    vq_rgb = save_model(_init(VQModel(vq_config("debug", codebook_size=64))), tmp_path / "vq_rgb")
    for cls in ("a", "b"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((40, 36), 40 * i, np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    _tokenize_folder(vq_rgb, tmp_path / "imgs", tmp_path / "tok.npz")
    with np.load(tmp_path / "tok.npz") as f:
        assert f["codes"].shape == (6, 256) and f["labels"].tolist() == [0, 0, 0, 1, 1, 1]


def test_generate_writes_shards_and_packs_them(files: dict, tmp_path: Path, capsys) -> None:
    args = _gen("generate", files["var"], files["msvq"], n=5, batch_size=2, out=tmp_path / "s")
    rep = _run(args, capsys)
    assert rep["ok"]
    with np.load(rep["npz"]) as f:
        assert f["arr_0"].shape[0] == 5 and f["arr_1"].tolist() == [0, 1, 2, 3, 4]
    # resuming after completion writes nothing new and packs the same images
    again = _run(args, capsys)
    with np.load(rep["npz"]) as f, np.load(again["npz"]) as g:
        assert np.array_equal(f["arr_0"], g["arr_0"])


def test_tokenize_train_sample_chain(files: dict, tmp_path: Path, capsys) -> None:
    """The user path: images -> tokens -> `argen train gpt` -> `argen sample` with the same tokenizer."""
    for cls in ("a", "b"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((32, 32), 30 * i + 100 * (cls == "b"), np.uint8)).save(
                tmp_path / "imgs" / cls / f"{i}.png"
            )
    vq_rgb = save_model(_init(VQModel(vq_config("debug", codebook_size=64))), tmp_path / "vq_rgb")
    _tokenize_folder(vq_rgb, tmp_path / "imgs", tmp_path / "tok.npz")
    sets = [
        "model.preset=debug",
        "model.grid=16",
        "model.num_classes=2",
        "data.source=tokens",
        f"data.root={tmp_path / 'tok.npz'}",
        "steps=4",
        "batch_size=4",
        f"out_dir={tmp_path / 'run'}",
        "device=cpu",
    ]
    main(["train", "gpt", *(arg for kv in sets for arg in ("--set", kv))])
    capsys.readouterr()
    model = tmp_path / "run" / "model.safetensors"
    rep = _run(_gen("sample", model, vq_rgb, "npz", n_per_class=2, out=tmp_path / "s"), capsys)
    with np.load(rep["npz"]) as f:
        assert f["arr_0"].shape == (4, 32, 32, 3) and f["arr_1"].tolist() == [0, 0, 1, 1]
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(m["loss"]) for m in metrics if "loss" in m)


def test_var_reference_sampler_flag_matches_fast(files: dict, tmp_path: Path, capsys) -> None:
    arrays = []
    for sampler in ("fast", "reference"):
        opts = dict(classes="2,7", n_per_class=2, sampler=sampler, out=tmp_path / sampler)
        rep = _run(_gen("sample", files["var"], files["msvq"], "npz", **opts), capsys)
        with np.load(rep["npz"]) as f:
            arrays.append(f["arr_0"])
    assert np.array_equal(arrays[0], arrays[1])


def test_adaptive_schedule_flag_chooses_passes(files: dict, tmp_path: Path, capsys) -> None:
    args = _gen("sample", files["ear"], files["vq"], classes=0, n_per_class=2, adaptive=0.5, out=tmp_path)
    rep = _run(args, capsys)
    # the random model's zero-initialised head gives uniform probabilities (1/64 < 0.5): unsure everywhere,
    # so every pass keeps only its floor (half its window): 19 passes, fewer than the fixed schedule's 31;
    # the report counts what ran (rejected proposals included), so it costs more than the 19-pass schedule
    assert rep["steps"] == 19 and rep["steps_max"] == 19
    fixed = _run(["flops", "--model", str(files["ear"]), "--schedule", "19"], capsys)
    assert rep["gflops"] > fixed["gflops"]


def test_bench_against_times_two_models_side_by_side(files: dict, tmp_path: Path, capsys) -> None:
    from argen.models.actvar import ActVAR, actvar_config

    var = load_model(files["var"])
    sparse = ActVAR.from_dense(var, actvar_config("debug", var=var.config, kmeans_iters=2)).eval()
    actvar = save_model(sparse, tmp_path / "actvar")
    args = _gen("bench", actvar, files["msvq"], against=files["var"], batch_sizes="1,2", repeats=1)
    rep = _run([*args, "--out", str(tmp_path / "b.json")], capsys)
    names = [str(actvar), str(files["var"])]
    assert rep["compared"] == names and [r["batch_size"] for r in rep["per_batch"]] == [1, 2]
    for row in rep["per_batch"]:
        assert row["time_ratio"] == row[names[0]]["cpu_s"] / row[names[1]]["cpu_s"] > 0
    gflops = rep["gflops_per_image"]
    assert rep["flops_ratio"] == gflops[names[0]] / gflops[names[1]] < 1  # the debug budget saves FLOPs
    assert json.loads((tmp_path / "b.json").read_text())["per_batch"] == rep["per_batch"]
    with pytest.raises(SystemExit) as e:
        main(_gen("bench", files["var"], files["msvq"], against=files["var"]))
    assert e.value.code == 2 and "--against names the model itself" in capsys.readouterr().err


def test_help_states_each_default_once(monkeypatch) -> None:
    import argparse
    import re

    from argen.cli import build_parser

    monkeypatch.setenv("COLUMNS", "1000")  # no wrapping inside a flag's help
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert {"sample", "generate", "extend", "eval", "bench", "tokenize"} <= set(commands)
    for name, sub in commands.items():
        flags = re.split(r"\n  (?=-)", sub.format_help())  # one entry per flag
        assert not [f for f in flags if f.count("(default") > 1], name
        assert "(default: None)" not in sub.format_help() and "(default: False)" not in sub.format_help()
    tokenize = commands["tokenize"].format_help()
    assert "(default: 256)" in tokenize and "(default: the Debian location)" in tokenize
