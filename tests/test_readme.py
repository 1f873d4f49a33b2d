"""Every command in the README parses (argen's flags, and torchrun's own parser for the torchrun lines), its
--config/--set values load into the config they name, and the cheap ones run."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from argen.cli import build_parser, main
from argen.config import TrainConfig, load_config

REPO = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    """The README's bash lines (continuations joined, comments dropped) that call argen."""
    text = (REPO / "README.md").read_text()
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line.startswith(("argen ", "torchrun ")) and "..." not in line:
                lines.append(line)
    return lines


def _argv(line: str) -> tuple[list[str], list[str] | None]:
    """(argen argv, torchrun's own argv or None)."""
    words = shlex.split(line)
    if words[0] == "torchrun":
        at = words.index("-m")
        return words[at + 2 :], words[1:]
    return words[1:], None


COMMANDS = readme_commands()


def test_the_readme_has_commands() -> None:
    assert len(COMMANDS) > 30


@pytest.mark.parametrize("line", COMMANDS)
def test_readme_command_parses_and_its_config_loads(line: str, monkeypatch) -> None:
    monkeypatch.chdir(REPO)
    argv, torchrun = _argv(line)
    if torchrun is not None:
        from torch.distributed.run import get_args_parser

        get_args_parser().parse_args(torchrun)  # "--n" once made torchrun fail: ambiguous with --nnodes
    args = build_parser().parse_args(argv)
    if args.command == "train":
        load_config(TrainConfig, args.config, args.set, base={"task": args.task})
    elif args.command == "distill":
        from argen.training.distill import DistillConfig

        load_config(DistillConfig, args.config, args.set)
    elif args.command == "eval":
        from argen.eval.evaluate import EvalConfig

        load_config(EvalConfig, args.config, args.set)


def test_cheap_readme_commands_run(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(REPO)
    ran = 0
    for line in COMMANDS:
        argv, torchrun = _argv(line)
        if torchrun is None and argv[0] in ("flops", "presets", "fields"):
            main(argv)
            ran += 1
    assert ran >= 1
    shipped = ["--model", "ear_any_fmnist", "--tokenizer", "vq2_fmnist"]  # by name, from any directory
    main(
        [
            "sample",
            *shipped,
            "--schedule",
            "8",
            "--classes",
            "0",
            "--n-per-class",
            "2",
            "--out",
            str(tmp_path / "s"),
        ]
    )
    assert (tmp_path / "s" / "samples.png").is_file()
