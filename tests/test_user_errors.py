"""Nothing silently wrong: every user error ends in one line with exit code 2 (no traceback), and inputs a
model was not trained for are refused. Each case below failed (traceback, silent garbage or a silently
ignored flag) before it was fixed."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from argen.cli import main
from argen.models.checkpoints import file_digest, save_model
from argen.tokenizers.vqgan import VQModel, vq_config


def _fail(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    """Run the CLI, expect exit code 2, return stderr (one message, no traceback)."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    assert "Traceback" not in err
    return err


def _sample(files: dict, model: str = "ear", tok: str = "vq", *extra: str) -> list[str]:
    return ["sample", "--model", str(files[model]), "--tokenizer", str(files[tok]), "--device", "cpu", *extra]


# --------------------------------------------------------------------------------- flags and their ranges
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--n-per-class", "-1"], "images per class must be a whole number >= 1"),
        (["--cfg", "nan"], "guidance scale"),
        (["--cfg", "-1"], "guidance scale"),
        (["--adaptive", "1.5"], "adaptive confidence threshold"),
        (["--adaptive", "0"], "adaptive confidence threshold"),
        (["--temperature", "0"], "temperature must be a number > 0"),
        (["--top-p", "0"], "top_p must be in (0, 1]"),
        (["--batch-size", "0"], "must be >= 1"),
        (["--device", "foo"], "not a device name"),
        (["--order", "raster"], "trained to generate in 'spiral' order"),
        (["--sampler", "reference"], "applies to VAR"),
    ],
)
def test_sampling_flags_out_of_range(files: dict, tmp_path: Path, capsys, extra, message) -> None:
    assert message in _fail([*_sample(files), "--out", str(tmp_path), *extra], capsys)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda(files: dict, tmp_path: Path, capsys) -> None:
    err = _fail([*_sample(files), "--out", str(tmp_path), "--device", "cuda"], capsys)
    assert "use --device cpu or auto" in err


def test_var_refuses_gpt_only_flags(files: dict, tmp_path: Path, capsys) -> None:
    for extra in (["--schedule", "8"], ["--adaptive", "0.5"], ["--order", "raster"]):
        err = _fail([*_sample(files, "var", "msvq"), "--out", str(tmp_path), *extra], capsys)
        assert "applies to raster/EAR models" in err


def test_raster_refuses_spiral_schedule_and_adaptive(tmp_path: Path, capsys, files: dict) -> None:
    from argen.models.gpt import GPT, gpt_config

    raster = GPT(gpt_config("debug_raster", grid=16))
    raster.init_weights()
    path = save_model(raster, tmp_path / "raster")
    base = ["sample", "--model", str(path), "--tokenizer", str(files["vq"]), "--device", "cpu"]
    assert "'raster' order" in _fail([*base, "--order", "spiral"], capsys)
    assert "--schedule and --adaptive do not apply" in _fail([*base, "--schedule", "8"], capsys)
    assert "--schedule and --adaptive do not apply" in _fail([*base, "--adaptive", "0.5"], capsys)


def test_generator_refuses_another_tokenizer_with_the_same_shape(files: dict, tmp_path: Path, capsys) -> None:
    """The model file records its tokenizer's codebook: a same-shape tokenizer is caught, not sampled."""
    meta_path = Path(files["ear"]).with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    torch.manual_seed(1)
    other = VQModel(vq_config("debug", in_channels=1, out_channels=1, codebook_size=64))
    other.init_weights()
    other_path = save_model(other, tmp_path / "other_vq")
    model = tmp_path / "ear.safetensors"
    model.write_bytes(Path(files["ear"]).read_bytes())
    from argen.models.checkpoints import load_model, tokenizer_fingerprint

    fingerprint = tokenizer_fingerprint(load_model(files["vq"]))
    meta["trained_with"] = {"tokenizer": {"fingerprint": fingerprint, "file": "vq"}}
    model.with_suffix(".json").write_text(json.dumps(meta))
    argv = ["sample", "--model", str(model), "--device", "cpu", "--out", str(tmp_path / "s")]
    err = _fail([*argv, "--tokenizer", str(other_path)], capsys)
    assert "is not the tokenizer" in err
    main(
        [*argv, "--tokenizer", str(files["vq"]), "--n-per-class", "1", "--classes", "0"]
    )  # the right one works
    # without --tokenizer: the recorded file when it is found, else a clear error
    assert "give --tokenizer" in _fail(
        [*argv, "--overwrite"], capsys
    )  # "vq" is neither a file here nor a shipped model
    meta["trained_with"]["tokenizer"]["file"] = str(files["vq"])
    model.with_suffix(".json").write_text(json.dumps(meta))
    main([*argv, "--overwrite", "--n-per-class", "1", "--classes", "0"])
    report = json.loads((tmp_path / "s" / "sample.json").read_text())
    assert report["run"]["tokenizer"] == file_digest(files["vq"])


def test_eval_refuses_samples_and_model_together(files: dict, tmp_path: Path, capsys) -> None:
    argv = ["eval", "--samples", str(tmp_path / "x.npz"), "--model", str(files["ear"])]
    assert "not both" in _fail(argv, capsys)


def test_reconstruct_and_distill_refuse_the_wrong_kind(files: dict, capsys) -> None:
    err = _fail(["reconstruct", "--tokenizer", str(files["ear"])], capsys)
    assert "is a gpt model; this needs a vq or msvq model" in err
    argv = ["distill", "--set", f"teacher={files['var']}", "--set", f"vqvae={files['vq']}"]
    argv += ["--set", "stage1_steps=1", "--set", "stage2_steps=1", "--set", "source=random"]
    assert "this needs a msvq model" in _fail(argv, capsys)


def test_extend_images_out_of_range(files: dict, tmp_path: Path, capsys) -> None:
    pytest.importorskip("argen.data")
    from argen.data import FashionMNIST

    try:
        FashionMNIST(None, "test", 32)
    except ValueError:
        pytest.skip("Fashion-MNIST is not installed")
    argv = ["extend", "--model", str(files["ear"]), "--tokenizer", str(files["vq"]), "--device", "cpu"]
    assert "test split has images 0..9999" in _fail(
        [*argv, "--images", "0,99999", "--out", str(tmp_path)], capsys
    )


# ---------------------------------------------------------------------------------------------- configs
@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("steps=abc", "expects a whole number"),
        ("steps=5.5", "expects a whole number"),
        ("batch_size=true", "expects a whole number"),
        ('optim.lr="1e-3"', "without quotes"),
        ("strategy=5", "expects a string"),
        ("data=3", "expects an object"),
    ],
)
def test_config_values_of_the_wrong_type(capsys, setting, message) -> None:
    assert message in _fail(["train", "gpt", "--set", setting], capsys)


def test_config_files_of_the_wrong_shape(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"steps": "five"}')
    assert "config field steps expects a whole number, got 'five'" in _fail(
        ["train", "gpt", "--config", str(bad)], capsys
    )
    bad.write_text("[1, 2]")
    assert "must hold a JSON object" in _fail(["train", "gpt", "--config", str(bad)], capsys)


def test_empty_disc_dict_means_default_discriminator() -> None:
    from argen.training.objectives import build_tokenizer

    assert type(build_tokenizer("vq", {"preset": "debug", "disc": {}})).__name__ == "TokenizerWithDisc"
    assert type(build_tokenizer("vq", {"preset": "debug", "disc": True})).__name__ == "TokenizerWithDisc"
    assert type(build_tokenizer("vq", {"preset": "debug"})).__name__ == "VQModel"


def test_train_tokenizer_default_preset_matches_default_data() -> None:
    """`argen train tokenizer` without --config: the default preset takes the default 1-channel data."""
    from argen.config import TrainConfig
    from argen.training.objectives import tokenizer_config

    cfg = TrainConfig(task="tokenizer")
    assert cfg.data.source == "fashion_mnist" and tokenizer_config("vq", cfg.model).in_channels == 1
    assert tokenizer_config("msvq", cfg.model).in_channels == 1


# ------------------------------------------------------------------------------------------ data and files
def test_corrupt_png_and_channel_mismatch_in_an_imagefolder(files: dict, tmp_path: Path, capsys) -> None:
    root = tmp_path / "imgs"
    (root / "a").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(root / "a" / "0.png")
    tokenize = ["tokenize", "--tokenizer", str(files["vq"]), "--source", "imagefolder", "--root", str(root)]
    tokenize += ["--out", str(tmp_path / "t.npz"), "--device", "cpu"]
    assert "encodes 1-channel images but imagefolder gives 3-channel" in _fail(tokenize, capsys)
    (root / "a" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    from argen.data import ImageFolder

    with pytest.raises(ValueError, match="not a readable image"):
        [ImageFolder(root, 32)[i] for i in range(2)]


def test_sample_out_is_a_file_or_an_earlier_run(files: dict, tmp_path: Path, capsys) -> None:
    target = tmp_path / "file.txt"
    target.write_text("keep me")
    assert "is a file" in _fail([*_sample(files), "--out", str(target)], capsys)
    assert target.read_text() == "keep me"
    out = tmp_path / "run"
    small = ["--classes", "0", "--n-per-class", "1", "--out", str(out)]
    main([*_sample(files), *small])
    capsys.readouterr()
    assert "holds an earlier run" in _fail([*_sample(files), *small], capsys)
    main([*_sample(files), *small, "--overwrite"])


def test_disk_full_is_one_line_and_leaves_nothing_behind(
    files: dict, tmp_path: Path, capsys, monkeypatch
) -> None:
    """A full disk while writing the picture: exit 2, one line, no partial or temporary files."""
    import PIL.Image

    def full(self, fp, *args, **kwargs):
        Path(fp).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device", str(fp))

    monkeypatch.setattr(PIL.Image.Image, "save", full)
    out = tmp_path / "out"
    err = _fail([*_sample(files), "--classes", "0", "--n-per-class", "1", "--out", str(out)], capsys)
    assert "No space left on device" in err and "run the command again" in err
    assert not out.exists() or not any(out.iterdir())


def test_model_file_and_json_have_the_same_permissions(tmp_path: Path) -> None:
    model = VQModel(vq_config("debug"))
    path = save_model(model, tmp_path / "m")
    assert path.stat().st_mode == path.with_suffix(".json").stat().st_mode
    assert not list(tmp_path.glob("*.tmp*"))


def test_shipped_models_load_by_name_from_any_directory(tmp_path: Path, monkeypatch) -> None:
    from argen.models.checkpoints import load_model

    monkeypatch.chdir(tmp_path)
    assert load_model("vq2_fmnist").kind == "vq"


def test_help_shows_every_flag_with_help_text() -> None:
    import argparse

    from argen.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = [
        f"{name} {'/'.join(action.option_strings) or action.dest}"
        for name, p in sub.choices.items()
        for action in p._actions
        if not isinstance(action, argparse._HelpAction) and not action.help
    ]
    assert not missing, missing


def test_presets_and_fields_are_listed(capsys) -> None:
    main(["presets", "gpt"])
    assert "fmnist_s" in json.loads(capsys.readouterr().out)["gpt"]
    main(["fields", "train"])
    fields = json.loads(capsys.readouterr().out)
    assert fields["steps"] == 1000 and fields["precision"] in ("fp32", "auto")
