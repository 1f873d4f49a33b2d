"""Run-level configuration helpers; importable without torch.

Every component takes one config dataclass. Configs come from a preset, an optional JSON file and
`--set key=value` overrides (dotted keys reach nested dataclasses; values are parsed as JSON, falling back
to plain strings).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-serialisable dict of a (nested) config dataclass."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """Turn `["a.b=3", "c=[1,2]"]` into a nested dict `{"a": {"b": 3}, "c": [1, 2]}`."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ValueError(f"override {pair!r} must look like key=value (e.g. --set optim.lr=3e-4)")
        key, raw = pair.split("=", 1)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; `update` wins."""
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


_TYPE_WORDS = {int: "a whole number", float: "a number", str: "a string", bool: "true or false"}


def _type_error(where: str, expected: str, value: Any) -> ValueError:
    hint = " (write numbers and true/false without quotes)" if isinstance(value, str) else ""
    return ValueError(f"config field {where or '?'} expects {expected}, got {value!r}{hint}")


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """Check `value` against the field type `tp` (and convert lists to tuples, whole floats to ints)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise _type_error(where, "an object of fields ({...})", value)
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        if len(args) == 1:
            return _coerce(args[0], value, where)
        for arg in args:  # the first member the value fits
            try:
                return _coerce(arg, value, where)
            except ValueError:
                continue
        raise _type_error(where, " or ".join(_TYPE_WORDS.get(a, str(a)) for a in args), value)
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise _type_error(where, "a list", value)
        return tuple(value) if origin is tuple else list(value)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise _type_error(where, "an object ({...})", value)
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise _type_error(where, _TYPE_WORDS[bool], value)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _type_error(where, _TYPE_WORDS[float], value)
        return float(value)
    if tp is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise _type_error(where, _TYPE_WORDS[int], value)
        return value
    if tp is str and not isinstance(value, str):
        raise _type_error(where, _TYPE_WORDS[str], value)
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build dataclass `cls` from a dict, rejecting unknown keys (with the list of valid ones) and values of
    the wrong type (a field `int` takes 5 or 5.0, not "5", 5.5 or true)."""
    if not isinstance(data, dict):
        raise ValueError(
            f"{cls.__name__}{' at ' + where if where else ''} must be a JSON object, got {data!r}"
        )
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = set(data) - fields
    if unknown:
        close = {k: difflib.get_close_matches(k, fields, n=1) for k in sorted(unknown)}
        hint = "".join(f" (did you mean {m[0]!r} for {k!r}?)" for k, m in close.items() if m)
        raise ValueError(
            f"unknown config key(s) {sorted(unknown)} for {cls.__name__}{' at ' + where if where else ''}"
            f"{hint}; valid keys: {sorted(fields)}"
        )
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}".lstrip(".")) for k, v in data.items()}
    return cls(**kwargs)


def load_config(
    cls: type[T],
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
) -> T:
    """Config from `base` dict, then a JSON file, then `key=value` overrides."""
    data: dict[str, Any] = dict(base or {})
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ValueError(f"config file {p} not found")
        try:
            loaded = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"config file {p} is not valid JSON: {e}") from e
        if not isinstance(loaded, dict):
            raise ValueError(
                f"config file {p} must hold a JSON object of fields, got a {type(loaded).__name__}"
            )
        data = merge(data, loaded)
    data = merge(data, parse_overrides(overrides))
    return from_dict(cls, data)


def replace(cfg: T, **changes: Any) -> T:
    """`dataclasses.replace` that re-runs `__post_init__` validation."""
    return dataclasses.replace(cfg, **changes)


# ----------------------------------------------------------------------------------------------- training
@dataclasses.dataclass
class DataConfig:
    """Where training/eval images or tokens come from.

    source: "fashion_mnist" (IDX files, padded to 32x32), "imagefolder" (one folder per class) or
        "tokens" (a pre-extracted token dataset written by `argen tokenize`).
    root: directory of the IDX files / ImageFolder root / token file; None = the default location.
    """

    source: str = "fashion_mnist"
    root: str | None = None
    split: str = "train"
    image_size: int = 32
    ten_crop: bool = False
    num_workers: int = 0

    def __post_init__(self) -> None:
        if self.source not in ("fashion_mnist", "imagefolder", "tokens"):
            raise ValueError(f"data.source {self.source!r}: choose fashion_mnist, imagefolder or tokens")
        if self.image_size <= 0 or self.num_workers < 0:
            raise ValueError("data.image_size must be > 0 and data.num_workers >= 0")


@dataclasses.dataclass
class OptimConfig:
    lr: float = 3e-4
    weight_decay: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.95
    warmup_steps: int = 100
    schedule: str = "cosine"  # cosine | step | constant
    min_lr_ratio: float = 0.1
    step_milestones: list[int] = dataclasses.field(default_factory=list)
    step_gamma: float = 0.1
    grad_clip: float = 1.0  # 0 = off

    def __post_init__(self) -> None:
        if self.schedule not in ("cosine", "step", "constant"):
            raise ValueError(f"optim.schedule {self.schedule!r}: choose cosine, step or constant")
        if self.lr <= 0 or self.warmup_steps < 0 or self.grad_clip < 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(
                "optim needs lr > 0, warmup_steps >= 0, grad_clip >= 0 (0 = off), 0 <= min_lr_ratio <= 1"
            )


@dataclasses.dataclass
class TrainConfig:
    """One training run. `task` picks the model family and objective (see argen.training.tasks).

    model: the model's config as a dict: {"preset": "debug", <field overrides>}.
    objective: task-specific options (EAR schedule randomisation, label dropout, loss weights, ...).
    batch_size: global batch per optimizer step (split over ranks and accumulation micro-steps).
    """

    task: str = "gpt"
    model: dict[str, Any] = dataclasses.field(default_factory=dict)
    objective: dict[str, Any] = dataclasses.field(default_factory=dict)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    steps: int = 1000
    batch_size: int = 64
    grad_accum: int = 1
    precision: str = "fp32"  # fp32 | bf16 (autocast; under fsdp also bf16 params, fp32 grad reduce)
    activation_checkpointing: bool = False  # recompute each block's activations in backward (less memory)
    ema_decay: float = 0.0  # 0 = no EMA
    strategy: str = "none"  # none | ddp | fsdp
    device: str = "auto"
    out_dir: str = "runs/default"
    ckpt_every: int = 500
    keep_last: int = 2
    log_every: int = 10
    seed: int = 0
    tensorboard: bool = False
    # "auto": continue from the newest checkpoint in out_dir/checkpoints if there is one; "never": start fresh
    # (refused if checkpoints exist, so nothing is overwritten); "always": a checkpoint must exist.
    resume: str = "auto"
    # An argen model file whose weights start the run (fine-tuning), or a training checkpoint directory
    # (out_dir/checkpoints/step_XXXXXXXX: its EMA weights when it kept EMA); the model must match `model`.
    # Ignored when resuming from a checkpoint, which already holds the fine-tuned weights.
    init: str = ""

    def __post_init__(self) -> None:
        choices = {
            "precision": ("fp32", "bf16", "auto"),  # auto: bf16 where its matmuls beat fp32
            "strategy": ("none", "ddp", "fsdp"),
            "resume": ("auto", "never", "always"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r}: choose one of {allowed}")
        if self.steps < 0 or self.batch_size <= 0 or self.grad_accum <= 0:
            raise ValueError("steps must be >= 0, batch_size and grad_accum > 0")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay={self.ema_decay} must be in [0, 1) (0 disables EMA)")
        if self.ckpt_every < 0 or self.log_every <= 0 or self.keep_last <= 0:
            raise ValueError("ckpt_every must be >= 0 (0 = only at the end), log_every and keep_last > 0")
