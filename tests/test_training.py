"""Trainer, optimizer, EMA and resumable checkpoints, on a toy task registered here (no model-family code)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import TensorDataset
from toy_model import ToyConfig, ToyNet

from argen.config import OptimConfig, TrainConfig
from argen.models.checkpoints import CheckpointError, load_model
from argen.training import checkpoint as ckpt
from argen.training.ema import EMA
from argen.training.loop import NonFiniteLossError, train
from argen.training.optim import build_optimizer, build_scheduler, lr_factor, no_decay_names
from argen.training.tasks import Task, register_task

# ------------------------------------------------------------------------------------------- toy task
CALLS = {"n": 0}  # loss calls in this process: lets a test inject a crash or a NaN at a chosen micro-step


def toy_loss(model, batch, opts):
    x_BD, y_B, t_B = batch
    CALLS["n"] += 1
    if CALLS["n"] == opts.get("crash_at_call"):
        raise KeyboardInterrupt("simulated kill")
    time.sleep(opts.get("sleep", 0.0))  # gives a test time to SIGKILL the process mid-run
    loss = (model(x_BD, y_B) - t_B).pow(2).mean()
    if CALLS["n"] == opts.get("nan_at_call"):
        loss = loss * float("nan")
    return loss, {"mse": float(loss.detach())}


def toy_dataset(cfg: TrainConfig) -> TensorDataset:
    g = torch.Generator().manual_seed(123)
    x_ND = torch.randn(cfg.objective.get("n", 40), 8, generator=g)
    y_N = torch.randint(0, 4, (len(x_ND),), generator=g)
    return TensorDataset(x_ND, y_N, x_ND.sin().sum(-1) + 0.5 * y_N)


_TOY = register_task(
    Task(
        "test_training_toy",
        lambda d: ToyNet(ToyConfig(**{k: v for k, v in d.items() if k != "preset"})),
        toy_dataset,
        toy_loss,
    )
)


register_task(Task("test_training_toy_b", _TOY.build_model, toy_dataset, toy_loss))


def toy_cfg(out: Path, **kw) -> TrainConfig:
    base = dict(
        task="test_training_toy",
        model={"preset": "debug"},
        steps=12,
        batch_size=8,
        grad_accum=2,
        ema_decay=0.9,
        out_dir=str(out),
        ckpt_every=4,
        keep_last=2,
        log_every=1,
        seed=3,
        optim=OptimConfig(lr=1e-2, warmup_steps=2, schedule="cosine"),
    )
    base.update(kw)
    return TrainConfig(**base)


def run(cfg: TrainConfig) -> Path:
    CALLS["n"] = 0
    return train(cfg)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------- optimizer, EMA
def test_no_decay_on_norms_biases_embeddings():
    model = ToyNet(ToyConfig())
    skip = no_decay_names(model)
    assert "class_emb.weight" in skip and "blocks.0.0.weight" in skip and "head.bias" in skip
    assert "blocks.0.1.weight" not in skip and "head.weight" not in skip
    groups = build_optimizer(model, OptimConfig(weight_decay=0.1)).param_groups
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_lr_schedules():
    cos = OptimConfig(warmup_steps=10, schedule="cosine", min_lr_ratio=0.1)
    assert lr_factor(0, cos, 110) == pytest.approx(0.1) and lr_factor(9, cos, 110) == pytest.approx(1.0)
    assert lr_factor(60, cos, 110) == pytest.approx(0.55) and lr_factor(110, cos, 110) == pytest.approx(0.1)
    step = OptimConfig(warmup_steps=0, schedule="step", step_milestones=[5, 8], step_gamma=0.5)
    assert [lr_factor(s, step, 10) for s in (4, 5, 8)] == [1.0, 0.5, 0.25]
    with pytest.raises(ValueError, match="schedule"):
        OptimConfig(schedule="linear")


def test_ema_matches_formula():
    model = nn.Linear(3, 2)
    ema = EMA(model, 0.5)
    w0 = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)  # effective decay min(0.5, 1/10) = 0.1
    torch.testing.assert_close(ema.shadow["weight"], 0.1 * w0 + 0.9 * (w0 + 1.0))


# --------------------------------------------------------------------------------------------- trainer
def test_train_loss_decreases_and_exports(tmp_path):
    cfg = toy_cfg(tmp_path / "a", steps=40, ema_decay=0.0, optim=OptimConfig(lr=3e-2, warmup_steps=0))
    path = run(cfg)
    records = [json.loads(ln) for ln in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 41))
    first, last = sum(r["loss"] for r in records[:5]) / 5, sum(r["loss"] for r in records[-5:]) / 5
    assert last < 0.5 * first, (first, last)
    assert all(r["img_per_s"] > 0 and math.isfinite(r["grad_norm"]) for r in records)
    for i in (0, 1, 39):  # the logged rate is the one step i+1 used (no warm-up: step 1 has the full rate)
        assert records[i]["lr"] == pytest.approx(3e-2 * lr_factor(i, cfg.optim, 40))
    model = load_model(path)
    assert isinstance(model, ToyNet)
    final = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "a" / "checkpoints"))
    assert final.step == 40
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, final.model[k], rtol=0, atol=0)
    assert len(ckpt.list_checkpoints(tmp_path / "a" / "checkpoints")) == 2  # keep_last


def test_kill_and_resume_is_bit_identical(tmp_path):
    # 40 items / 8 per step = 5 steps per epoch: crash (step 7) and resume (step 4) cross an epoch boundary.
    ref = load_file(str(run(toy_cfg(tmp_path / "ref"))))
    crashed = toy_cfg(tmp_path / "b", objective={"crash_at_call": 2 * 6 + 1})  # inside step 7 (2 calls/step)
    with pytest.raises(KeyboardInterrupt):
        run(crashed)
    assert ckpt.latest_checkpoint(tmp_path / "b" / "checkpoints").name == "step_00000004"
    with open(tmp_path / "b" / "metrics.jsonl", "a") as f:
        f.write('{"step": 7, "lo')  # a record cut short by the kill
    resumed = load_file(str(run(toy_cfg(tmp_path / "b"))))
    assert ref.keys() == resumed.keys()
    for k in ref:
        assert torch.equal(ref[k], resumed[k]), k  # EMA export: bit-identical
    a = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "ref" / "checkpoints"))
    b = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "b" / "checkpoints"))
    for k in a.model:
        assert torch.equal(a.model[k], b.model[k]), k  # live weights
    for name, st in a.optimizer["state"].items():
        assert all(torch.equal(v, b.optimizer["state"][name][key]) for key, v in st.items()), name
    steps = [json.loads(ln)["step"] for ln in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 13))  # the log was rewound to the checkpoint, no duplicate records


def test_corrupt_or_mismatched_checkpoint_refused_without_writes(tmp_path):
    out = tmp_path / "c"
    run(toy_cfg(out, steps=4))
    latest = ckpt.latest_checkpoint(out / "checkpoints")
    weights = latest / "state.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    before = snapshot(out)
    with pytest.raises(CheckpointError, match="corrupt"):
        run(toy_cfg(out, steps=8))
    assert snapshot(out) == before
    (latest / "state.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="readable"):
        run(toy_cfg(out, steps=8))
    out2 = tmp_path / "d"
    run(toy_cfg(out2, steps=4))
    before = snapshot(out2)
    with pytest.raises(CheckpointError, match="model="):
        run(toy_cfg(out2, steps=8, model={"preset": "debug", "hidden": 32}))
    with pytest.raises(CheckpointError, match="would overwrite"):
        run(toy_cfg(out2, steps=8, resume="never"))
    with pytest.raises(CheckpointError, match="would overwrite"):
        CALLS["n"] = 0
        train(toy_cfg(out2, steps=8), resume=False)
    with pytest.raises(CheckpointError, match="task="):
        run(toy_cfg(out2, steps=8, task="test_training_toy_b"))
    assert snapshot(out2) == before


def test_init_from_model_file_fine_tunes(tmp_path):
    first = run(toy_cfg(tmp_path / "a", steps=8, ema_decay=0.0))
    # zero steps from `init` export exactly the file's weights; a fresh seed alone would not
    start = load_file(str(run(toy_cfg(tmp_path / "b", steps=0, ema_decay=0.0, seed=9, init=str(first)))))
    ref = load_file(str(first))
    assert all(torch.equal(ref[k], start[k]) for k in ref)
    scratch = load_file(str(run(toy_cfg(tmp_path / "c", steps=0, ema_decay=0.0, seed=9))))
    assert not all(torch.equal(ref[k], scratch[k]) for k in ref)
    with pytest.raises(CheckpointError, match="shape mismatches"):
        run(toy_cfg(tmp_path / "d", model={"preset": "debug", "hidden": 32}, init=str(first)))
    with pytest.raises(CheckpointError, match="no such model file"):
        run(toy_cfg(tmp_path / "e", init=str(tmp_path / "missing.safetensors")))


def test_init_from_training_checkpoint_takes_its_ema_weights(tmp_path):
    # a run forked part-way (any-schedule EAR from an EAR run's step-N checkpoint) starts from its EMA weights
    final = run(toy_cfg(tmp_path / "a", steps=8, ckpt_every=8))  # the export holds the EMA weights at step 8
    step8 = tmp_path / "a" / "checkpoints" / "step_00000008"
    start = load_file(str(run(toy_cfg(tmp_path / "b", steps=0, ema_decay=0.0, seed=9, init=str(step8)))))
    ref = load_file(str(final))
    assert all(torch.equal(ref[k], start[k]) for k in ref)


def test_checkpoint_roundtrip_restores_optimizer_and_scheduler(tmp_path):
    model = nn.Linear(3, 3, bias=False)  # a single (decay) parameter group
    cfg = OptimConfig(warmup_steps=2)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, 10)
    for _ in range(3):
        model(torch.randn(2, 3)).pow(2).sum().backward()  # gradients left in place on purpose
        opt.step()
        sched.step()
    path = ckpt.save_checkpoint(tmp_path, ckpt.gather_training_state(model, opt, sched, None, 3, {}))
    opt2 = build_optimizer(model, cfg)
    sched2 = build_scheduler(opt2, cfg, 10)
    ckpt.apply_training_state(ckpt.load_checkpoint(path), model, opt2, sched2, None, str(path))
    a, b = opt.state_dict()["state"][0], opt2.state_dict()["state"][0]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert sched2.last_epoch == 3 and opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def test_shape_mismatch_reported(tmp_path):
    model = ToyNet(ToyConfig(hidden=32))
    state = ToyNet(ToyConfig()).state_dict()
    with pytest.raises(CheckpointError, match="shape mismatches"):
        ckpt.check_shapes(model, state, "file")


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    out = tmp_path / "n"
    with pytest.raises(NonFiniteLossError, match="at step 6") as err:
        run(toy_cfg(out, objective={"nan_at_call": 2 * 5 + 1}))
    assert "step_00000004" in str(err.value)
    latest = ckpt.latest_checkpoint(out / "checkpoints")
    assert latest.name == "step_00000004"
    state = ckpt.load_checkpoint(latest)
    assert all(torch.isfinite(v).all() for v in state.model.values())
    assert not (out / "model.safetensors").exists()


def test_bf16_autocast_runs(tmp_path):
    cfg = toy_cfg(tmp_path / "bf", steps=3, precision="bf16", ckpt_every=0)
    model = load_model(run(cfg))
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.parameters())


def test_precision_auto_records_what_ran_and_adamw_is_fused(tmp_path):
    from argen.device import bf16_is_fast

    out = run(toy_cfg(tmp_path / "auto", steps=2, precision="auto", ckpt_every=0)).parent
    expected = "bf16" if bf16_is_fast("cpu") else "fp32"
    assert json.loads((out / "config.json").read_text())["precision"] == expected
    assert build_optimizer(nn.Linear(4, 4), OptimConfig()).defaults["fused"] is True


def test_batch_not_divisible_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="divisible"):
        run(toy_cfg(tmp_path / "x", batch_size=7))
    with pytest.raises(ValueError, match="smaller than one global batch"):
        run(toy_cfg(tmp_path / "x", batch_size=64))
    assert not (tmp_path / "x").exists()  # refused before writing anything


def test_tensorboard_optional(tmp_path):
    cfg = toy_cfg(tmp_path / "tb", steps=2, tensorboard=True)
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="pip install"):
            run(cfg)
        return
    assert isinstance(load_model(run(cfg)), ToyNet) and any((tmp_path / "tb" / "tb").iterdir())


def test_sigkill_then_resume_is_bit_identical(tmp_path):
    """A real kill -9 at an arbitrary moment (possibly while a checkpoint is being written)."""
    out = tmp_path / "k"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, __file__, str(out)], env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    ckpts = out / "checkpoints"
    while proc.poll() is None and time.monotonic() < deadline and not ckpt.list_checkpoints(ckpts):
        time.sleep(0.02)
    time.sleep(0.25)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "model.safetensors").exists(), "the run finished before it could be killed"
    assert ckpt.list_checkpoints(out / "checkpoints"), "killed before the first checkpoint"
    resumed = load_file(str(run(toy_cfg(out, steps=30))))
    ref = load_file(str(run(toy_cfg(tmp_path / "ref", steps=30))))
    assert all(torch.equal(ref[k], resumed[k]) for k in ref)


if __name__ == "__main__":  # the process killed by test_sigkill_then_resume_is_bit_identical
    torch.set_num_threads(1)
    run(toy_cfg(Path(sys.argv[1]), steps=30, ckpt_every=2, objective={"sleep": 0.1}))


def test_start_of_run_line_says_what_was_resumed_and_what_changed(tmp_path, capsys):
    run(toy_cfg(tmp_path, steps=4))
    assert f"new run in {tmp_path}, random init (seed 3)" in capsys.readouterr().err
    run(toy_cfg(tmp_path, steps=6, batch_size=16, grad_accum=2))
    err = capsys.readouterr().err
    assert "resumed from" in err and "step_00000004 at step 4 of 6" in err
    assert "batch_size changed since the checkpoint: 8 -> 16" in err


@pytest.mark.parametrize(
    ("task", "key", "hint"),
    [
        ("var", "progresive_steps", "progressive_steps"),
        ("gpt", "randomise", "randomize"),
        ("classifier", "label_smoothin", "label_smoothing"),
        ("distill", "stage1_step", "stage1_steps"),
    ],
)
def test_objective_options_are_typed_and_a_typo_is_named(task, key, hint):
    from argen.training.distill import distill_options
    from argen.training.objectives import (
        ClassifierObjective,
        GPTObjective,
        VARObjective,
        objective_options,
    )

    classes = {"var": VARObjective, "gpt": GPTObjective, "classifier": ClassifierObjective}
    parse = distill_options if task == "distill" else lambda o: objective_options(classes[task], o)
    with pytest.raises(ValueError, match=rf"unknown config key.*'{key}'.*did you mean '{hint}'"):
        parse({key: 1, "step": 3})
    with pytest.raises(ValueError, match="expects"):  # and values have types
        parse({hint: "many", "step": 3})


def test_export_checkpoint_equals_the_final_export_and_records_images_seen(tmp_path):
    """`argen export` of the last checkpoint writes exactly the run's exported (EMA) weights."""
    from argen.training.export import export_checkpoint

    final = run(toy_cfg(tmp_path / "r", steps=4, ckpt_every=2, keep_last=3))
    last = tmp_path / "r" / "checkpoints" / "step_00000004"
    got = export_checkpoint(last, tmp_path / "exported")
    want = load_model(final)
    mid = load_model(export_checkpoint(last.with_name("step_00000002"), tmp_path / "m"))
    for k, v in want.state_dict().items():
        assert torch.equal(load_model(got).state_dict()[k], v), k
    assert any(not torch.equal(mid.state_dict()[k], v) for k, v in want.state_dict().items())
    record = json.loads(got.with_suffix(".json").read_text())["trained_with"]
    assert record == json.loads(final.with_suffix(".json").read_text())["trained_with"]
    assert record["images_seen"] == 4 * 8 * 2 and record["step"] == 4
    with pytest.raises(ValueError, match="not a training checkpoint"):
        export_checkpoint(tmp_path / "r", tmp_path / "x")
