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


def _init(model: torch.nn.Module) -> torch.nn.Module:
    model.init_weights()
    return model.eval()


@pytest.fixture(scope="session")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny random models saved as argen files: vq + EAR (16x16 grid), msvq + VAR."""
    from argen.models.checkpoints import save_model
    from argen.models.gpt import GPT, gpt_config
    from argen.models.var import VAR, var_config
    from argen.tokenizers.multiscale import MultiScaleVQVAE, msvq_config
    from argen.tokenizers.vqgan import VQModel, vq_config

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("models")
    vq = _init(VQModel(vq_config("debug", in_channels=1, out_channels=1, codebook_size=64)))
    ear = _init(GPT(gpt_config("debug", grid=16)))
    msvq = _init(MultiScaleVQVAE(msvq_config("debug", in_channels=1, vocab_size=64)))
    var = _init(VAR(var_config("debug")))
    return {
        name: save_model(m, d / name) for name, m in {"vq": vq, "ear": ear, "msvq": msvq, "var": var}.items()
    }
