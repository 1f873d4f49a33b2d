"""Shared test fixtures: location of the official reference files, deterministic torch settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def official_dir() -> Path:
    """`shared/fixtures/official` beside the repository (or $ARGEN_FIXTURES)."""
    env = os.environ.get("ARGEN_FIXTURES")
    return Path(env) if env else REPO.parent / "shared" / "fixtures" / "official"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    path = official_dir()
    if not path.is_dir():
        pytest.skip(f"official fixtures not found at {path} (set ARGEN_FIXTURES)")
    return path


# Test models are tiny: a second intra-op thread costs more in synchronisation than it saves in matmuls
# (10x slower on a busy 2-core machine), so every test runs single-threaded.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
