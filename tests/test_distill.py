"""ActVAR distillation in the one trainer: KL to the teacher goes down, stage 1 leaves the backbone alone,
resume == no crash (bit for bit, across the stage boundary), 2-rank DDP == one process, bf16 runs, and the
teacher's signals come from hooks on its own forward.

The torchrun part runs this file under torchrun once (module fixture):
`python -m torch.distributed.run --standalone --nproc_per_node 2 tests/test_distill.py OUT`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import default_collate

from argen.config import DataConfig, OptimConfig
from argen.models.actvar import ActVAR, actvar_config
from argen.models.checkpoints import load_model, save_model
from argen.models.var import VAR, var_config
from argen.tokenizers.multiscale import MultiScaleVQVAE, msvq_config
from argen.training.distill import DistillConfig, kl_to_teacher, stage1_losses, teacher_signals
from argen.training.distill_data import distill_dataset
from argen.training.loop import train


def distill(cfg: DistillConfig) -> Path:
    return train(cfg.train_config())


def batch(cfg: DistillConfig, first: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Items first.. of the run's dataset (epoch 0) as (labels_B, var_input (B, L - first, Cv), codes_BL)."""
    data = distill_dataset(cfg.train_config())
    codes, labels, *features = default_collate([data[i] for i in range(first, first + cfg.batch_size)])
    if features:
        return labels, features[0], codes
    vqvae = load_model(cfg.vqvae)
    sizes = load_model(cfg.teacher).config.scale_sizes
    with torch.no_grad():
        return labels, vqvae.idxBl_to_var_input(list(codes.split(sizes, dim=1))), codes


@pytest.fixture
def teacher_file(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    var = VAR(var_config("debug")).eval()
    with torch.no_grad():  # larger gates than the official init so every block and token matters
        for b in var.blocks:
            b.ada_lin[-1].weight.normal_(0, 0.5)
        var.head.weight.normal_(0, 0.5)
    return save_model(var, tmp_path / "teacher")


def _cfg(teacher: Path, out: Path, **kw) -> DistillConfig:
    base = dict(
        teacher=str(teacher),
        budget="debug",
        source="random",
        batch_size=8,
        stage1_steps=3,
        stage2_steps=4,
        out_dir=str(out),
        log_every=1,
        ckpt_every=100,
        device="cpu",
    )
    return DistillConfig(**{**base, **kw})


def _token_run(teacher: Path, tmp_path: Path) -> DistillConfig:
    """Eight multi-scale token maps + a (random) VQVAE file: the real `source="tokens"` path."""
    vqvae = save_model(MultiScaleVQVAE(msvq_config("var_ref_a")), tmp_path / "vqvae")
    rng = np.random.RandomState(0)
    np.savez(tmp_path / "tokens.npz", codes=rng.randint(0, 64, (8, 30)), labels=rng.randint(0, 10, (8,)))
    return _cfg(
        teacher,
        tmp_path / "run",
        source="tokens",
        vqvae=str(vqvae),
        stage1_steps=3,
        stage2_steps=12,
        data=DataConfig(source="tokens", root=str(tmp_path / "tokens.npz")),
        label_dropout=0.0,
        ce_weight=0.0,  # the codes are random: only the teacher is a target
        stage1_optim=OptimConfig(lr=1e-2, weight_decay=0.0, warmup_steps=0, schedule="constant"),
        stage2_optim=OptimConfig(lr=1e-3, weight_decay=0.0, warmup_steps=0, schedule="constant"),
    )


def _heldout_kl(model: ActVAR, teacher: VAR, cfg: DistillConfig) -> float:
    labels, var_input, _ = batch(cfg)
    with torch.no_grad():
        return float(kl_to_teacher(model.eval()(labels, var_input), teacher(labels, var_input)))


def test_signals_match_teacher_forward(teacher_file: Path) -> None:
    teacher = load_model(teacher_file)
    cfg = _cfg(teacher_file, Path("unused"))
    labels, var_input, _ = batch(cfg)
    logits, _, signals = teacher_signals(teacher, labels, var_input)
    torch.testing.assert_close(logits, teacher(labels, var_input))
    assert len(signals) == teacher.config.depth and signals[0]["update"].abs().mean() > 0


def test_distillation_reduces_kl(teacher_file: Path, tmp_path: Path) -> None:
    cfg = _token_run(teacher_file, tmp_path)
    teacher = load_model(teacher_file)
    before = _heldout_kl(ActVAR.from_dense(teacher, actvar_config("debug", var=teacher.config)), teacher, cfg)
    path = distill(cfg)
    after = _heldout_kl(load_model(path), teacher, cfg)
    assert before > 0.05
    assert after < 0.7 * before, (before, after)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in rows] == [1] * 3 + [2] * 12
    s1 = [{k[5:]: v for k, v in r.items() if k.startswith("task/s1_")} for r in rows[:3]]  # task metrics
    assert s1[2]["s1_router"] < s1[0]["s1_router"] and s1[2]["s1_gate"] < s1[0]["s1_gate"]


def test_stage1_trains_only_routers_gates_adapters(teacher_file: Path, tmp_path: Path) -> None:
    cfg = _cfg(teacher_file, tmp_path / "run", stage2_steps=0)
    teacher = load_model(teacher_file)
    model = load_model(distill(cfg))
    dense = model.to_dense()
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in dense.state_dict().items())
    fresh = ActVAR.from_dense(teacher, model.config)
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, fresh.state_dict()[k])]
    assert changed and all(".router." in k or k.startswith("selectors.") for k in changed)


def test_stage1_loss_needs_a_sparse_budget(teacher_file: Path) -> None:
    teacher = load_model(teacher_file)
    student = ActVAR.from_dense(teacher)  # everything on: nothing to distil
    cfg = _cfg(teacher_file, Path("unused"))
    labels, var_input, _ = batch(cfg)
    with pytest.raises(ValueError, match="nothing to train"):
        stage1_losses(student, teacher_signals(teacher, labels, var_input)[2], cfg)


def test_resume_equals_uninterrupted(teacher_file: Path, tmp_path: Path) -> None:
    kw = dict(ckpt_every=2, keep_last=10)  # 3 stage-1 steps, 4 stage-2 steps
    full = load_model(distill(_cfg(teacher_file, tmp_path / "a", **kw))).state_dict()
    run_b = tmp_path / "b"
    distill(_cfg(teacher_file, run_b, **kw))
    ckpts = sorted(p.name for p in (run_b / "checkpoints").iterdir())
    assert ckpts == ["step_00000002", "step_00000003", "step_00000004", "step_00000006", "step_00000007"]
    # Crash right after step 4 (inside stage 2: optimizer state restored), then after step 2 (inside stage 1:
    # the run crosses the stage boundary again).
    for keep in ("step_00000004", "step_00000002"):
        for name in sorted(p.name for p in (run_b / "checkpoints").iterdir()):
            if name > keep:
                shutil.rmtree(run_b / "checkpoints" / name)
        resumed = load_model(distill(_cfg(teacher_file, run_b, **kw))).state_dict()
        for k, v in full.items():
            torch.testing.assert_close(resumed[k], v, rtol=0, atol=1e-6, msg=f"{keep}: {k}")
