"""`argen reconstruct`: PSNR, usage, picture; reconstructions scored exactly as `argen eval` scores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from argen.cli import main
from argen.config import DataConfig
from argen.eval.evaluate import EvalConfig, evaluate
from argen.eval.inception import to_uint8
from argen.models.checkpoints import load_model, save_model
from argen.models.classifier import build_classifier
from argen.tokenizers.evaluate import reconstruction_metrics

N = 24


@pytest.fixture(scope="module")
def test_images() -> tuple[torch.Tensor, torch.Tensor]:
    """The first N Fashion-MNIST test images in [-1, 1] with their labels."""
    from argen.data import build_image_dataset

    try:
        ds = build_image_dataset(DataConfig(split="test"))
    except ValueError as e:
        pytest.skip(f"Fashion-MNIST not available: {e}")
    imgs, labels = zip(*(ds[i] for i in range(N)), strict=True)
    return torch.stack(imgs), torch.tensor(labels)


def _run(argv: list[str], capsys: pytest.CaptureFixture) -> dict:
    main(argv)
    return json.loads(capsys.readouterr().out)


def test_reconstruct_without_fid_reports_psnr_usage_and_picture(files, test_images, tmp_path, capsys):
    argv = ["reconstruct", "--tokenizer", str(files["vq"]), "--n", str(N), "--no-fid", "--out", str(tmp_path)]
    argv += ["--dtype", "fp32"]  # compared with an fp32 computation below (auto is bf16 on bf16 hardware)
    rep = _run([*argv, "--set", f"out={tmp_path / 'r.json'}", "--set", "progress=false"], capsys)
    assert rep == json.loads((tmp_path / "r.json").read_text())
    imgs, _ = test_images
    expected = reconstruction_metrics(load_model(files["vq"]), torch.utils.data.TensorDataset(imgs), N)
    assert rep["n"] == N and "fid" not in rep
    for key in ("psnr", "usage", "perplexity"):
        assert rep[key] == pytest.approx(expected[key], rel=1e-5)
    # originals over reconstructions: 2 rows of 10 images of 32 px, 2 px padding, upscaled 3x
    assert Image.open(rep["image"]).size == (3 * (10 * 34 + 2), 3 * (2 * 34 + 2))


def test_reconstructions_are_scored_like_samples(files, test_images, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ARGEN_CACHE", str(tmp_path / "cache"))
    clf = save_model(build_classifier({"preset": "debug"}), tmp_path / "clf")
    scoring = ["features=classifier", f"classifier={clf}", "ref_n=60", "kid_subsets=3", "kid_subset_size=12"]
    scoring += ["progress=false", f"out={tmp_path / 'r.json'}"]
    argv = ["reconstruct", "--tokenizer", str(files["vq"]), "--n", str(N), "--out", str(tmp_path)]
    argv += ["--dtype", "fp32"]
    rep = _run([*argv, *(a for s in scoring for a in ("--set", s))], capsys)
    assert rep == json.loads((tmp_path / "r.json").read_text())
    assert rep["n"] == N and rep["floor"]["n"] == N and "reconstructions of the first 24" in rep["scored"]
    assert 0 <= rep["class_accuracy"] <= 1 and rep["psnr"] > 0 and 0 < rep["usage"] <= 1

    # The same reconstructions given to `argen eval`'s evaluate directly: the same numbers.
    imgs, labels = test_images
    with torch.no_grad():
        model = load_model(files["vq"])
        rec = model.decode_codes(model.encode(imgs)).clamp(-1, 1)
    cfg = EvalConfig(features="classifier", classifier=str(clf), ref_n=60, kid_subsets=3, kid_subset_size=12)
    direct = evaluate(cfg, to_uint8((rec + 1) / 2), labels)
    for key in ("fid", "kid_mean", "kid_std", "precision", "recall", "class_accuracy"):
        assert rep[key] == pytest.approx(direct[key], rel=1e-6), key
    assert rep["features"] == direct["features"] and rep["fid"] > 0
    assert rep["floor"]["fid"] == pytest.approx(direct["floor"]["fid"], rel=1e-6)
    assert rep["reference"] == direct["reference"]


def test_reconstruct_config_errors(files, tmp_path: Path):
    from argen.apps.reconstruct import ReconstructConfig

    with pytest.raises(ValueError, match="n must be >= 1"):
        ReconstructConfig(str(files["vq"]), n=0, out=str(tmp_path))
