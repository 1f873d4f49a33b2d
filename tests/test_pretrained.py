"""Model folders (config.json + model.safetensors + card): exact round trips for every kind, every loader
takes a folder, and a malformed folder is one clear error."""

from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path

import pytest
import torch

from argen.cli import main
from argen.models.checkpoints import CheckpointError, load_model, read_meta, save_model
from argen.models.pretrained import from_pretrained, save_pretrained

# one shipped model of every registered kind
SHIPPED = {
    "vq": "vq2_fmnist",
    "msvq": "msvq2_fmnist",
    "gpt": "ear_any_fmnist",
    "var": "var_fmnist",
    "actvar": "actvar_fmnist",
    "classifier": "classifier_fmnist",
}


def _same(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key].dtype == sb[key].dtype, key
        assert torch.equal(sa[key], sb[key]), key


@pytest.fixture(scope="module")
def ear_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pretrained") / "ear_any"
    meta = read_meta("ear_any_fmnist")
    return save_pretrained(
        load_model("ear_any_fmnist"), folder, trained_with=meta["trained_with"], sampling=meta.get("sampling")
    )


@pytest.mark.parametrize("kind", sorted(SHIPPED))
def test_round_trip_is_exact_for_every_kind(kind: str, tmp_path: Path) -> None:
    model = load_model(SHIPPED[kind])
    assert model.kind == kind
    folder = save_pretrained(model, tmp_path / SHIPPED[kind], numbers={"accuracy": 0.896})
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    back = from_pretrained(folder)
    assert type(back) is type(model) and back.config == model.config and not back.training
    _same(model, back)
    _same(model, load_model(folder))  # the plain loader takes the folder too
    card = (folder / "README.md").read_text()
    assert "library_name: argen" in card and f"`{kind}` model" in card and "| accuracy | 0.896 |" in card


def test_bf16_folder_keeps_bf16_weights(tmp_path: Path) -> None:
    model = load_model("vq2_fmnist", dtype=torch.bfloat16)
    folder = save_pretrained(model, tmp_path / "vq", dtype=torch.bfloat16)
    _same(model, from_pretrained(folder, dtype=torch.bfloat16))
    # the shipped bf16 file and the folder hold the same weights
    _same(load_model("vq2_fmnist"), from_pretrained(folder))


def test_bf16_save_keeps_integer_buffers_exact(tmp_path: Path) -> None:
    """ActVAR's expert permutation (0..511) is an integer buffer: bf16 would round 257 to 256."""
    model = load_model("actvar_fmnist")
    perm_H = torch.randperm(512)
    model.var.blocks[0].ffn.perm_H.copy_(perm_H)
    back = from_pretrained(save_pretrained(model, tmp_path / "actvar", dtype=torch.bfloat16))
    assert back.var.blocks[0].ffn.perm_H.dtype == torch.int64
    assert torch.equal(back.var.blocks[0].ffn.perm_H, perm_H)


def test_folder_config_is_the_model_file_json(ear_folder: Path) -> None:
    config = json.loads((ear_folder / "config.json").read_text())
    assert config == read_meta("ear_any_fmnist")
    assert read_meta(ear_folder) == config
    assert "randomize" in (ear_folder / "README.md").read_text()  # training record on the card


def test_from_pretrained_takes_files_and_names_and_checks_kind(ear_folder: Path) -> None:
    _same(from_pretrained("ear_any_fmnist"), from_pretrained(ear_folder))
    with pytest.raises(CheckpointError, match="is a gpt model; this needs a vq or msvq model"):
        from_pretrained(ear_folder, expect=("vq", "msvq"))
    with pytest.raises(CheckpointError, match="give a model folder"):
        from_pretrained("no_such_model_anywhere")


def test_training_run_folder_loads(tmp_path: Path) -> None:
    """A training run's folder holds model.safetensors + model.json beside the run's own config.json."""
    save_model(load_model("vq2_fmnist"), tmp_path / "model")
    (tmp_path / "config.json").write_text(json.dumps({"task": "vq", "steps": 10}))
    _same(load_model("vq2_fmnist"), load_model(tmp_path))


def _broken(ear_folder: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "broken"
    shutil.copytree(ear_folder, folder)
    return folder


def _edit_config(folder: Path, edit: dict) -> None:
    config = json.loads((folder / "config.json").read_text())
    config["config"].update(edit)
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: (f / "model.safetensors").unlink(), r"model file .*model\.safetensors not found"),
        (lambda f: (f / "config.json").unlink(), r"config\.json not found: a model folder holds"),
        (lambda f: (f / "config.json").write_text("{not json"), "is not valid JSON"),
        (
            lambda f: (f / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 768})),
            "is not an argen model config",
        ),
        (lambda f: _edit_config(f, {"dim_model": 3}), r"does not build a gpt model: unknown config key"),
        (lambda f: _edit_config(f, {"n_layer": "four"}), "does not build a gpt model"),
        (lambda f: _edit_config(f, {"dim": 64}), "shape mismatches"),
        (lambda f: _edit_config(f, {"n_layer": 2}), "unexpected keys"),
        (lambda f: (f / "model.safetensors").write_bytes(b"\x00" * 10), "not a readable safetensors file"),
    ],
)
def test_malformed_folder_is_one_clear_error(ear_folder, tmp_path, damage, message) -> None:
    folder = _broken(ear_folder, tmp_path)
    damage(folder)
    with pytest.raises(CheckpointError, match=message):
        from_pretrained(folder)


def test_cli_takes_folders(ear_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    tok = save_pretrained(load_model("vq2_fmnist"), tmp_path / "vq")
    out = tmp_path / "s"
    argv = [
        "sample",
        "--model",
        str(ear_folder),
        "--tokenizer",
        str(tok),
        "--classes",
        "3",
        "--device",
        "cpu",
    ]
    main([*argv, "--n-per-class", "2", "--schedule", "4", "--out", str(out)])
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 2 and report["steps"] == 4 and (out / "samples.png").is_file()
    broken = _broken(ear_folder, tmp_path)
    (broken / "config.json").unlink()
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--model", str(broken), "--out", str(tmp_path / "t")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "config.json not found" in err and "Traceback" not in err


def test_hub_repo_id_needs_huggingface_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails as if not installed
    with pytest.raises(CheckpointError, match="pip install huggingface_hub"):
        from_pretrained("someone/ear-fmnist")


def test_hub_repo_id_is_fetched_with_snapshot_download(ear_folder, monkeypatch) -> None:
    calls = []

    def snapshot_download(repo_id: str, revision: str | None, allow_patterns: list[str]) -> str:
        calls.append((repo_id, revision, sorted(allow_patterns)))
        return str(ear_folder)

    hub = types.SimpleNamespace(snapshot_download=snapshot_download)
    monkeypatch.setitem(sys.modules, "huggingface_hub", hub)
    _same(from_pretrained("someone/ear-fmnist", revision="v1"), load_model("ear_any_fmnist"))
    assert calls == [("someone/ear-fmnist", "v1", ["README.md", "config.json", "model.safetensors"])]

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setitem(sys.modules, "huggingface_hub", types.SimpleNamespace(snapshot_download=offline))
    with pytest.raises(CheckpointError, match=r"could not fetch someone/ear-fmnist .*no network"):
        from_pretrained("someone/ear-fmnist")


def test_model_sampling_defaults_apply_under_explicit_settings(tmp_path: Path) -> None:
    from argen.sampling.pipeline import GenerateConfig, Pipeline

    model = load_model("ear_fmnist")
    own = {"cfg_scale": 3.5, "temperature": 0.9}
    folder = save_pretrained(
        model, tmp_path / "ear", trained_with=read_meta("ear_fmnist")["trained_with"], sampling=own
    )
    assert read_meta(folder)["sampling"] == own
    assert "## Sampling defaults" in (folder / "README.md").read_text()
    pipe = Pipeline.load(GenerateConfig(model=str(folder), device="cpu"))
    assert (pipe.sampling.cfg_scale, pipe.sampling.temperature) == (3.5, 0.9)
    pipe = Pipeline.load(GenerateConfig(model=str(folder), device="cpu", sampling={"cfg_scale": 1.0}))
    assert (pipe.sampling.cfg_scale, pipe.sampling.temperature) == (1.0, 0.9)  # the caller's setting wins
    save_model(model, tmp_path / "plain")
    plain = Pipeline.load(GenerateConfig(model=str(tmp_path / "plain.safetensors"), device="cpu"))
    assert plain.sampling.cfg_scale == 2.0  # no recorded defaults: the family's
    save_model(model, tmp_path / "bad", sampling={"cfg": 2.0})
    with pytest.raises(ValueError, match=r"unknown sampling default\(s\) \['cfg'\]"):
        Pipeline.load(GenerateConfig(model=str(tmp_path / "bad.safetensors"), device="cpu"))
