"""A training checkpoint -> an argen model file: the weights a run had at step N (its EMA weights when the run
kept EMA, as the final export does), with the same training record, so a learning curve can score any
checkpoint with `argen eval` / `argen sample`."""

from __future__ import annotations

from pathlib import Path

from argen.config import TrainConfig, from_dict
from argen.models.checkpoints import load_strict, save_model
from argen.training import checkpoint as ckpt
from argen.training.loop import training_record
from argen.training.tasks import get_task


def export_checkpoint(step_dir: str | Path, out: str | Path) -> Path:
    """Write the model of checkpoint `step_dir` (`out_dir/checkpoints/step_XXXXXXXX/`) to `out`
    (.safetensors + .json); returns the model file's path."""
    if not ckpt.is_checkpoint(step_dir):
        raise ValueError(f"{step_dir} is not a training checkpoint (a checkpoints/step_XXXXXXXX/ folder)")
    state = ckpt.load_checkpoint(step_dir)
    cfg = from_dict(TrainConfig, state.config, where=str(step_dir))
    task = get_task(cfg.task)
    model = task.build_model(cfg.model)
    load_strict(model, {**state.model, **(state.ema or {})}, source=str(step_dir))
    trained_with = training_record(task, cfg, task.build_dataset(cfg), state.step)
    exported = getattr(model, "export_model", lambda: model)()
    return save_model(exported.eval(), Path(out).with_suffix(".safetensors"), trained_with=trained_with)
