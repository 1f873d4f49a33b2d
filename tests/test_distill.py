"""ActVAR distillation in the one trainer: KL to the teacher goes down, stage 1 leaves the backbone alone,
resume == no crash (bit for bit, across the stage boundary), 2-rank DDP == one process, bf16 runs, and the
teacher's signals come from hooks on its own forward.

The torchrun part runs this file under torchrun once (module fixture):
`python -m torch.distributed.run --standalone --nproc_per_node 2 tests/test_distill.py OUT`.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import default_collate
from two_ranks import torchrun

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


# ----------------------------------------------------------------------------- hooks == copied forward
@torch.no_grad()
def copied_forward_signals(var: VAR, labels_B: torch.Tensor, var_input_BLCv: torch.Tensor) -> tuple:
    """The signals as distillation computed them before hooks: a copy of `VAR.forward` (reference only)."""
    cfg = var.config
    length = cfg.scale_sizes[0] + var_input_BLCv.shape[1]
    cond_BD = var.class_emb(labels_B)
    lvl_pos_1LC = var.lvl_pos()
    x_BLC = torch.cat(
        (
            var.first_scale_input(cond_BD, lvl_pos_1LC),
            var.word_embed(var_input_BLCv) + lvl_pos_1LC[:, cfg.scale_sizes[0] : length],
        ),
        1,
    )
    mask_LL = var.block_causal_mask(length, x_BLC.device)
    signals = []
    for block, mods in zip(var.blocks, var.block_mods(cond_BD), strict=True):
        gamma1, gamma2, scale1, scale2, shift1, shift2 = mods
        x_in = x_BLC
        h_attn = block.ln_wo_grad(x_BLC).mul(scale1.add(1)).add(shift1)
        x_BLC = x_BLC + block.attn_branch(x_BLC, mods, mask_LL)
        h_ffn = block.ln_wo_grad(x_BLC).mul(scale2.add(1)).add(shift2)
        x_BLC = x_BLC + block.ffn_branch(x_BLC, mods)
        signals.append({"h_attn": h_attn, "h_ffn": h_ffn, "update": x_BLC - x_in, "gamma": gamma1 + gamma2})
    return var.logits(x_BLC, cond_BD), x_BLC, signals


def test_hook_signals_equal_the_copied_forward(teacher_file: Path) -> None:
    teacher = load_model(teacher_file)
    labels, var_input, _ = batch(_cfg(teacher_file, Path("unused")))
    logits, hidden, signals = teacher_signals(teacher, labels, var_input)
    ref_logits, ref_hidden, ref_signals = copied_forward_signals(teacher, labels, var_input)
    torch.testing.assert_close(logits, ref_logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(hidden, ref_hidden, rtol=0, atol=1e-6)
    assert [sorted(s) for s in signals] == [sorted([*r, "out"]) for r in ref_signals]
    for sig, ref in zip(signals, ref_signals, strict=True):
        for key, value in ref.items():
            torch.testing.assert_close(sig[key], value, rtol=0, atol=1e-6, msg=key)
    assert not teacher.blocks[0].attn._forward_pre_hooks and not teacher.blocks[0]._forward_hooks  # removed


# ------------------------------------------------------------------ the trainer's features, tiny models
def token_cfg(files: dict[str, Path], root: Path, out: Path, **kw) -> DistillConfig:
    """The conftest's tiny VAR (teacher) and msvq on 16 random token maps: 2 + 3 steps of batch 8."""
    tokens = root / "tokens.npz"
    if not tokens.is_file():
        rng = np.random.RandomState(1)
        np.savez(tokens, codes=rng.randint(0, 64, (16, 30)), labels=rng.randint(0, 10, (16,)))
    base = dict(
        teacher=str(files["var"]),
        vqvae=str(files["msvq"]),
        data=DataConfig(source="tokens", root=str(tokens)),
        budget="debug",
        batch_size=8,
        stage1_steps=2,
        stage2_steps=3,
        ema_decay=0.5,
        out_dir=str(out),
        log_every=1,
        ckpt_every=0,
        seed=4,
        device="cpu",
        stage1_optim=OptimConfig(lr=1e-2, weight_decay=0.0, warmup_steps=0, schedule="constant"),
        stage2_optim=OptimConfig(lr=1e-3, weight_decay=0.0, warmup_steps=1, schedule="cosine"),
    )
    return DistillConfig(**{**base, **kw})


def test_resume_is_bit_exact_in_either_stage_and_at_the_boundary(files, tmp_path: Path) -> None:
    cfg = token_cfg(files, tmp_path, tmp_path / "whole", grad_accum=2, ckpt_every=1, keep_last=10)
    whole = load_file(str(distill(cfg)))
    rows = (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()
    run = tmp_path / "run"
    shutil.copytree(tmp_path / "whole", run)
    # Killed after step 4 (mid stage 2), after step 2 (stage 1's last step: the boundary), after step 1
    # (mid stage 1): each resume must reproduce the uninterrupted run exactly, EMA and log included.
    for keep in (4, 2, 1):
        for ckpt in (run / "checkpoints").iterdir():
            if int(ckpt.name[5:]) > keep:
                shutil.rmtree(ckpt)
        (run / "actvar.safetensors").unlink()
        resumed = load_file(
            str(distill(token_cfg(files, tmp_path, run, grad_accum=2, ckpt_every=1, keep_last=10)))
        )
        assert whole.keys() == resumed.keys()
        assert all(torch.equal(whole[k], resumed[k]) for k in whole), keep
        got = (run / "metrics.jsonl").read_text().splitlines()
        drop_speed = lambda line: {k: v for k, v in json.loads(line).items() if k != "img_per_s"}
        assert [drop_speed(x) for x in got] == [drop_speed(x) for x in rows], keep


def test_bf16_distillation_runs_and_follows_fp32(files, tmp_path: Path) -> None:
    ref = load_file(str(distill(token_cfg(files, tmp_path, tmp_path / "fp32"))))
    got = load_file(str(distill(token_cfg(files, tmp_path, tmp_path / "bf16", precision="bf16"))))
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["precision"] == "bf16"
    rows = [json.loads(x) for x in (tmp_path / "bf16" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and all(np.isfinite(r["loss"]) for r in rows)
    ref_rows = [json.loads(x) for x in (tmp_path / "fp32" / "metrics.jsonl").read_text().splitlines()]
    torch.testing.assert_close(
        torch.tensor([r["loss"] for r in rows]),
        torch.tensor([r["loss"] for r in ref_rows]),
        rtol=5e-3,
        atol=0,
    )
    for k in ref:
        if not ref[k].is_floating_point():  # ActVAR's expert permutation
            assert torch.equal(got[k], ref[k])
            continue
        assert got[k].dtype == ref[k].dtype == torch.float32  # fp32 weights, bf16 autocast compute
        # Adam moves each weight by about lr per step: two stage-1 steps of lr 1e-2 bound the gap (8e-3 seen)
        torch.testing.assert_close(got[k], ref[k], rtol=0, atol=2e-2, msg=k)
    assert (
        max((got[k] - ref[k]).abs().max().item() for k in ref if ref[k].is_floating_point()) > 1e-5
    )  # bf16 did run


# ------------------------------------------------------------------------------------- torchrun part
# Terms that are means over items (router KL, gate MSE, logit KL, CE) give 2 ranks the one-process gradient;
# the adapter, feature and budget terms are normalised by (or squared after) a batch mean, so there a rank's
# half batch differs slightly from the whole one.
PER_ITEM = dict(adapter_weight=0.0, feature_weight=0.0, budget_weight=0.0)
RUNS = {"ddp": dict(strategy="ddp", **PER_ITEM), "fsdp": dict(strategy="fsdp", **PER_ITEM)}
RUNS["ddp_all_terms"] = dict(strategy="ddp")
RUNS["fsdp_bf16"] = dict(strategy="fsdp", precision="bf16")  # bf16 gathers and compute, fp32 reduce


def worker(root: Path) -> None:
    from argen.distributed import cleanup, init_distributed

    info = init_distributed("cpu")
    files = {k: Path(v) for k, v in json.loads((root / "files.json").read_text()).items()}
    for name, kw in RUNS.items():
        distill(token_cfg(files, root, root / name, **kw))
    if info.is_main:
        (root / "done").write_text("ok")
    cleanup()


@pytest.fixture(scope="module")
def two_ranks(files, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("distill_two_ranks")
    (root / "files.json").write_text(json.dumps({k: str(v) for k, v in files.items()}))
    torchrun(__file__, str(root))
    assert (root / "done").is_file()
    return root


@pytest.mark.dist
@pytest.mark.parametrize(("name", "atol"), [("ddp", 1e-5), ("fsdp", 1e-5), ("ddp_all_terms", 4e-3)])
def test_two_rank_distillation_matches_one_process(two_ranks, files, tmp_path, name, atol) -> None:
    kw = {k: v for k, v in RUNS[name].items() if k != "strategy"}
    ref = load_file(str(distill(token_cfg(files, two_ranks, tmp_path / "one", **kw))))
    got = load_file(str(two_ranks / name / "actvar.safetensors"))
    assert ref.keys() == got.keys()
    diff = max((got[k].float() - ref[k].float()).abs().max().item() for k in ref)
    print(f"{name}: 2 ranks vs 1 process, max |weight diff| {diff:.2e}")
    # all terms: 4e-3 = a few Adam steps' worth (lr 1e-2 / 1e-3) on weights whose tiny gradients differ
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=0, atol=atol, msg=k)
    rows = [json.loads(x) for x in (two_ranks / name / "metrics.jsonl").read_text().splitlines()]
    ref_rows = [json.loads(x) for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in rows] == [1, 1, 2, 2, 2]
    torch.testing.assert_close(
        torch.tensor([r["loss"] for r in rows]),
        torch.tensor([r["loss"] for r in ref_rows]),
        rtol=1e-5,
        atol=0,
    )
    meta = json.loads((two_ranks / name / "actvar.json").read_text())
    assert meta["kind"] == "actvar" and meta["trained_with"]["objective"] == {
        "distilled_from": str(files["var"])
    }


@pytest.mark.dist
def test_two_rank_fsdp_bf16_distillation_follows_fp32(two_ranks) -> None:
    rows = [json.loads(x) for x in (two_ranks / "fsdp_bf16" / "metrics.jsonl").read_text().splitlines()]
    ref_rows = [
        json.loads(x) for x in (two_ranks / "ddp_all_terms" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["stage"] for r in rows] == [1, 1, 2, 2, 2]
    torch.testing.assert_close(
        torch.tensor([r["loss"] for r in rows]),
        torch.tensor([r["loss"] for r in ref_rows]),
        rtol=1e-2,
        atol=0,
    )
    got = load_file(str(two_ranks / "fsdp_bf16" / "actvar.safetensors"))
    assert all(v.dtype != torch.bfloat16 for v in got.values())  # fp32 master weights exported


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
