"""Model and data of task "distill": the frozen teacher, the ActVAR student, the batches and the provenance.

Shape legend: L tokens over all scales, Cv VQVAE channels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from argen.config import TrainConfig, from_dict
from argen.data import augment_index, build_dataset
from argen.model_io import read_meta
from argen.models.actvar import ActVAR, actvar_config
from argen.models.checkpoints import load_model
from argen.models.var import VARConfig, load_official_var, var_config
from argen.training.distill import Distiller, distill_options


@dataclass
class DistillModel:
    """`TrainConfig.model` of task "distill" (unknown keys refused).

    teacher: dense VAR: an argen model file or folder, a shipped name, or an official `var_d*.pth`.
    teacher_preset: VAR preset of an official .pth (e.g. "d16"); ignored for argen files.
    budget: ActVAR preset of the sparsity budget; `actvar` overrides its fields (the VAR part is the
        teacher's).
    vqvae: multi-scale VQVAE model file turning codes into the teacher-forcing input (None: "random" data
        with Gaussian features).
    """

    teacher: str = ""
    teacher_preset: str | None = None
    budget: str = "debug"
    actvar: dict[str, Any] = field(default_factory=dict)
    vqvae: str | None = None


def model_spec(model: dict[str, Any]) -> DistillModel:
    spec = from_dict(DistillModel, model, where="model")
    if not spec.teacher:
        raise ValueError("task distill needs model.teacher: the dense VAR model file to distil")
    return spec


def _official(spec: DistillModel) -> bool:
    if Path(spec.teacher).suffix not in (".pth", ".pt"):
        return False
    if not spec.teacher_preset:
        raise ValueError(
            f"{spec.teacher} is an official checkpoint: set teacher_preset (e.g. d16) to build its VAR"
        )
    return True


def teacher_config(spec: DistillModel) -> VARConfig:
    """The teacher's VAR config, read without loading its weights."""
    if _official(spec):
        return var_config(spec.teacher_preset)
    meta = read_meta(spec.teacher)
    if meta["kind"] != "var":
        raise ValueError(f"{spec.teacher} holds a {meta['kind']!r} model; the teacher must be a dense VAR")
    return from_dict(VARConfig, meta["config"], where=f"{spec.teacher} config")


def load_teacher(spec: DistillModel, device: torch.device | str = "cpu") -> nn.Module:
    """The frozen dense VAR: an argen model file, or an official .pth with `teacher_preset`."""
    if _official(spec):
        var = load_official_var(spec.teacher, var_config(spec.teacher_preset), device)
    else:
        teacher_config(spec)  # a clear error for another kind of model
        var = load_model(spec.teacher, device=device)
    return var.eval().requires_grad_(False)


def build_distiller(model: dict[str, Any]) -> Distiller:
    """Teacher + `ActVAR.from_dense(teacher)` at the budget preset with the `actvar` overrides + VQVAE."""
    spec = model_spec(model)
    teacher = load_teacher(spec)
    student = ActVAR.from_dense(teacher, actvar_config(spec.budget, var=teacher.config, **spec.actvar))
    vqvae = load_model(spec.vqvae, expect=("msvq",)).requires_grad_(False) if spec.vqvae else None
    return Distiller(student, teacher, vqvae)


# ---------------------------------------------------------------------------------------------- data
class RandomCodes(Dataset):
    """`num` items of uniform codes (L,) and labels, item i drawn from a generator seeded by (seed, i); with
    `features`, also Gaussian teacher-forcing features (L - first, Cv) (no VQVAE: smoke tests only)."""

    def __init__(self, num: int, var_cfg: VARConfig, seed: int, features: bool) -> None:
        self.num, self.cfg, self.seed, self.features = num, var_cfg, seed, features

    def __len__(self) -> int:
        return self.num

    def __getitem__(self, i: int) -> tuple:
        vc = self.cfg
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        codes = torch.randint(vc.vocab_size, (vc.seq_len,), generator=g)
        label = int(torch.randint(vc.num_classes, (), generator=g))
        if not self.features:
            return codes, label
        return codes, label, torch.randn(vc.seq_len - vc.scale_sizes[0], vc.vae_channels, generator=g)


class LabelDropout(Dataset):
    """Items (codes, label, ...) of `base` whose label becomes the null class `null` for a share `p`, drawn
    per (seed, epoch, item): the same on any number of ranks, and again on resume."""

    _RES = 1 << 30

    def __init__(self, base: Dataset, p: float, null: int, seed: int) -> None:
        self.base, self.p, self.null, self.seed, self.epoch = base, p, null, seed ^ 0x1ABE1, 0
        self.metadata = getattr(base, "metadata", {})

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple:
        codes, label, *rest = self.base[i]
        if augment_index(self.seed, self.epoch, i, self._RES) < self.p * self._RES:
            label = self.null
        return (codes, label, *rest)


def distill_dataset(cfg: TrainConfig) -> Dataset:
    """Token maps of all scales (objective.source="tokens": data.root from `argen tokenize` with the
    model's vqvae) or random codes, with the objective's label dropout."""
    spec, opts = model_spec(cfg.model), distill_options(cfg.objective)
    vc = teacher_config(spec)
    if opts.source == "tokens":
        if spec.vqvae is None or cfg.data.source != "tokens" or cfg.data.root is None:
            raise ValueError(
                "source=tokens needs data.source=tokens, data.root (token .npz or store from "
                "`argen tokenize`) and the vqvae (msvq file) that wrote it"
            )
        base = build_dataset(cfg.data, cfg.seed)
        if base.shape_NAL[-1] != vc.seq_len:
            raise ValueError(
                f"{cfg.data.root}: codes have {base.shape_NAL[-1]} positions, the teacher expects "
                f"{vc.seq_len} (all scales of {vc.patch_nums})"
            )
    else:  # every step draws fresh items
        base = RandomCodes(max(cfg.steps, 1) * cfg.batch_size, vc, cfg.seed, features=spec.vqvae is None)
    return LabelDropout(base, opts.label_dropout, vc.num_classes, cfg.seed)


def distill_provenance(cfg: TrainConfig, dataset: Dataset) -> dict[str, Any]:
    """The student samples with its teacher's tokenizer: keep the teacher's record of it."""
    spec = model_spec(cfg.model)
    meta = {} if _official(spec) else read_meta(spec.teacher)
    return {**meta.get("trained_with", {}), "objective": {"distilled_from": spec.teacher}}
