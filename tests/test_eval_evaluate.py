"""`evaluate`: reports on folders, .npz and in-memory samples, floors, reference .npz files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from argen.eval import evaluate as evaluate_mod
from argen.eval.classifier import build_classifier
from argen.eval.evaluate import EvalConfig, evaluate, fmnist_u8, load_samples
from argen.eval.fid import kid
from argen.eval.inception import INCEPTION_NAME
from argen.models.checkpoints import save_model


@pytest.fixture()
def env(tmp_path, monkeypatch):
    """Private cache dir and a small random classifier file (fast "domain" features)."""
    monkeypatch.setenv("ARGEN_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    path = save_model(build_classifier({"preset": "debug"}), tmp_path / "clf")
    return tmp_path, str(path)


@pytest.fixture(scope="module")
def real():
    try:
        return fmnist_u8("test", 60, seed=5)
    except ValueError as e:
        pytest.skip(f"Fashion-MNIST not available: {e}")


def _cfg(clf: str, **kw) -> EvalConfig:
    base = dict(
        features="classifier", classifier=clf, ref_n=200, kid_subsets=5, kid_subset_size=50, progress=False
    )
    return EvalConfig(**{**base, **kw})


def test_real_samples_sit_at_the_floor_and_noise_far_above(env, real):
    tmp, clf = env
    imgs, labels = real
    extra = {"generator": {"model": "m.safetensors", "steps": 31}}
    rep = evaluate(_cfg(clf, out=str(tmp / "r.json"), sample_seed=7), imgs, labels, extra)
    assert rep == json.loads((tmp / "r.json").read_text()) and rep["generator"] == extra["generator"]
    assert rep["n"] == 60 and rep["floor"]["n"] == 60 and rep["floor"]["split"] == "test"
    assert rep["seeds"] == {"eval_seed": 0, "sample_seed": 7} and not rep["standard_fid"]
    assert "NONSTANDARD" in rep["features"] and 0 <= rep["class_accuracy"] <= 1
    noise = torch.randint(0, 256, imgs.shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    bad = evaluate(_cfg(clf), noise)
    assert bad["class_accuracy"] is None  # no labels given
    assert bad["fid"] > 5 * max(rep["fid"], rep["floor"]["fid"])
    assert bad["kid_mean"] > rep["kid_mean"] and bad["precision"] < rep["precision"]
    # The floor does not depend on the samples and comes from the cache the second time.
    assert bad["floor"]["fid"] == pytest.approx(rep["floor"]["fid"])


def test_npz_and_folder_inputs_agree(env, real):
    from PIL import Image

    tmp, clf = env
    imgs, labels = real[0][:20], real[1][:20]
    np.savez(tmp / "s.npz", arr_0=imgs.permute(0, 2, 3, 1).numpy(), arr_1=labels.numpy())
    for i, (x, y) in enumerate(zip(imgs, labels, strict=True)):
        (tmp / "png" / str(int(y))).mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[0].numpy()).save(tmp / "png" / str(int(y)) / f"{i:04d}.png")
    for src in (tmp / "s.npz", tmp / "png"):
        got, got_labels = load_samples(src)
        order = torch.argsort(got_labels, stable=True)
        ref_order = torch.argsort(labels, stable=True)
        assert torch.equal(got[order], imgs[ref_order]) and torch.equal(got_labels[order], labels[ref_order])
    a = evaluate(_cfg(clf, samples=str(tmp / "s.npz"), floor=False))
    b = evaluate(_cfg(clf, samples=str(tmp / "png"), floor=False))
    # Same images in another order: equal up to float summation order.
    assert a["fid"] == pytest.approx(b["fid"], rel=1e-3) and a["class_accuracy"] == b["class_accuracy"]
    assert a["floor"] is None


class _PooledPixels:
    """Stand-in for Inception (same name, 16-d features) so the moments path runs without a 2048-d sqrtm."""

    name = INCEPTION_NAME

    def __call__(self, images_u8_NCHW: torch.Tensor) -> np.ndarray:
        x = torch.nn.functional.adaptive_avg_pool2d(images_u8_NCHW.float().mean(1, keepdim=True), 4)
        return x.flatten(1).numpy()


def test_adm_reference_npz_moments_and_images(env, real, monkeypatch):
    tmp, _ = env
    monkeypatch.setattr(evaluate_mod, "build_extractor", lambda cfg: _PooledPixels())
    imgs = real[0][:40]
    feats = _PooledPixels()(imgs).astype(np.float64)
    np.savez(tmp / "mom.npz", mu=feats.mean(0), sigma=np.cov(feats, rowvar=False))
    rep = evaluate(EvalConfig(reference=str(tmp / "mom.npz"), progress=False), imgs)
    assert rep["standard_fid"] and rep["n"] == 40 and rep["floor"] is None
    assert abs(rep["fid"]) < 1e-6  # the samples are the reference images
    assert rep["kid_mean"] is None and rep["reference"]["moments_from"] == "npz mu/sigma"
    # A reference with images only: moments and features come from them, so KID and P/R are reported.
    np.savez(tmp / "img.npz", arr_0=imgs.permute(0, 2, 3, 1).numpy())
    rep2 = evaluate(EvalConfig(reference=str(tmp / "img.npz"), progress=False), imgs)
    assert rep2["fid"] == pytest.approx(rep["fid"], abs=1e-6)
    assert rep2["reference"]["moments_from"] == "images" and rep2["precision"] == rep2["recall"] == 1.0
    cfg = EvalConfig()
    expected = kid(feats, feats, cfg.kid_subsets, cfg.kid_subset_size, cfg.seed)[0]
    assert rep2["kid_mean"] == pytest.approx(expected, rel=1e-5)


def test_config_errors_say_what_to_do():
    with pytest.raises(ValueError, match="inception"):
        EvalConfig(features="clip")
    with pytest.raises(ValueError, match="disjoint"):
        EvalConfig(floor_split="train")
    with pytest.raises(ValueError, match="samples"):
        evaluate(EvalConfig())
