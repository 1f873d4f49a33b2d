"""FID / KID / precision-recall invariants on synthetic features, and the reference-statistics cache."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ortho_group

from argen.eval import fid
from argen.eval.fid import feature_stats, frechet_distance, kid, precision_recall


def _rotated_gaussians(d: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    rot = ortho_group.rvs(d, random_state=seed)
    a, b = rng.uniform(0.5, 2.0, d), rng.uniform(0.5, 2.0, d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    closed = np.sum((mu1 - mu2) ** 2) + np.sum(a + b - 2 * np.sqrt(a * b))
    return mu1, rot @ np.diag(a) @ rot.T, mu2, rot @ np.diag(b) @ rot.T, closed


def test_fid_of_a_set_with_itself_is_zero():
    x = np.random.default_rng(0).normal(size=(500, 32)).astype(np.float32)
    s = feature_stats(x)
    assert abs(frechet_distance(s.mu, s.sigma, s.mu, s.sigma)) < 1e-6


def test_fid_matches_closed_form_for_gaussians():
    mu1, s1, mu2, s2, closed = _rotated_gaussians()
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(closed, rel=1e-8)
    # From samples the estimate converges to the same value.
    rng = np.random.default_rng(1)
    x = rng.multivariate_normal(mu1, s1, size=200_000)
    y = rng.multivariate_normal(mu2, s2, size=200_000)
    assert fid.fid_from_stats(feature_stats(x), feature_stats(y)) == pytest.approx(closed, rel=0.02)


def test_eigh_method_agrees_with_sqrtm():
    mu1, s1, mu2, s2, closed = _rotated_gaussians(d=12, seed=3)
    assert frechet_distance(mu1, s1, mu2, s2, method="eigh") == pytest.approx(closed, rel=1e-8)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 64)), rng.normal(size=(40, 64)) * 1.5 + 0.2  # singular covariances
    a, b = feature_stats(x), feature_stats(y)
    assert fid.fid_from_stats(a, b, "eigh") == pytest.approx(fid.fid_from_stats(a, b, "sqrtm"), rel=1e-4)


def test_fid_singular_covariance_is_finite():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(10, 64)), rng.normal(size=(10, 64)) + 1  # D > N: rank-deficient covariances
    d = fid.fid_from_stats(feature_stats(x), feature_stats(y))
    assert np.isfinite(d) and d > 0


def test_kid_is_unbiased_for_same_distribution_and_positive_when_shifted():
    rng = np.random.default_rng(0)
    same, shifted = [], []
    for i in range(60):
        x, y = rng.normal(size=(2, 100, 8))
        same.append(kid(x, y, num_subsets=1, subset_size=100, seed=i)[0])
        shifted.append(kid(x, y + 0.5, num_subsets=1, subset_size=100, seed=i)[0])
    same, shifted = np.array(same), np.array(shifted)
    stderr = same.std() / np.sqrt(len(same))
    assert abs(same.mean()) < 3 * stderr  # unbiased: the biased V-statistic would sit well above 0
    assert shifted.mean() > 10 * stderr and (shifted > 0).mean() > 0.9
    mean, std = kid(x, y + 0.5, num_subsets=20, subset_size=50, seed=0)
    assert mean > 0 and std > 0


def test_precision_recall_sanity():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(200, 16))
    assert precision_recall(real, real.copy(), k=3) == (1.0, 1.0)
    assert precision_recall(real, real + 100.0, k=3) == (0.0, 0.0)
    # Half of the fakes on the real manifold, half far away: precision ~ 1/2, recall stays high.
    fake = np.concatenate([rng.normal(size=(100, 16)), rng.normal(size=(100, 16)) + 100.0])
    p, r = precision_recall(real, fake, k=3)
    assert 0.4 < p <= 0.5 and r > 0.5


def test_reference_cache_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("ARGEN_CACHE", str(tmp_path))
    feats = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    calls = []

    def compute():
        calls.append(1)
        return feature_stats(feats, keep=20, seed=0)

    key = {"dataset": "synthetic", "split": "train", "n": 50, "extractor": "test", "seed": 0}
    first, path = fid.cached_stats(key, compute)
    second, path2 = fid.cached_stats(key, compute)
    assert len(calls) == 1 and path == path2 and path.is_relative_to(tmp_path)
    np.testing.assert_array_equal(first.sigma, second.sigma)
    assert second.feats.shape == (20, 4) and second.n == 50
    fid.cached_stats({**key, "n": 49}, compute)  # a different key recomputes
    assert len(calls) == 2
