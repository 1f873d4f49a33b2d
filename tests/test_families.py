"""The generator interface: the pipeline serves any registered family without knowing it, and refuses a
model kind nobody registered. A toy family below is one class plus `register_family`, nothing else."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from argen.models.checkpoints import CheckpointError, load_model
from argen.sampling.families import BatchOut, register_family
from argen.sampling.logits import SamplingConfig, uniforms
from argen.sampling.pipeline import GenerateConfig, Pipeline


@dataclass
class ToyConfig:
    vocab_size: int = 64
    num_classes: int = 3


class ToyGenerator(nn.Module):
    """Paints every image one grey level drawn from its own random stream."""

    kind = "toy"

    def __init__(self) -> None:
        super().__init__()
        self.config = ToyConfig()
        self.scale = nn.Parameter(torch.ones(()))


class ToyFamily:
    tokenizer_kind = "vq"
    frames_name = "growth"
    default_sampling = SamplingConfig()

    def config(self, model):
        return model.config

    def check(self, model, settings, trained_with):
        if settings.schedule is not None:
            raise ValueError("toy models have no schedule")

    def cost(self, model, sampling, settings):
        return {"steps": 1, "tokens": 1, "gflops": 0.0}

    def sample(self, model, tokenizer, labels_B, keys_B, sampling, settings, frames):
        grey_B = uniforms(keys_B, torch.zeros(1, dtype=torch.long))[:, 0] * model.scale
        return BatchOut(grey_B.view(-1, 1, 1, 1).expand(-1, 1, 4, 4), [], [1] * len(labels_B))


def test_a_registered_toy_family_samples_through_the_pipeline(files: dict) -> None:
    register_family("toy", ToyFamily())
    cfg = GenerateConfig(model="toy", batch_size=2)
    pipe = Pipeline(ToyGenerator(), load_model(files["vq"]), cfg)
    out = pipe.sample(torch.tensor([0, 1, 2]), seed=5)
    alone = pipe.sample(torch.tensor([2]), seed=5, indices_N=torch.tensor([2]))
    assert out.images.shape == (3, 1, 4, 4) and torch.equal(out.images[2:], alone.images)
    assert pipe.cost() == {"steps": 1, "tokens": 1, "gflops": 0.0} and pipe.num_classes == 3
    with pytest.raises(ValueError, match="no schedule"):
        Pipeline(ToyGenerator(), None, GenerateConfig(model="toy", schedule=4))


def test_an_unregistered_kind_is_an_error() -> None:
    class Stranger(ToyGenerator):
        kind = "stranger"

    with pytest.raises(CheckpointError, match="is a stranger model, not a generator"):
        Pipeline(Stranger(), None, GenerateConfig(model="stranger"))
