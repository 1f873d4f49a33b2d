"""The README and docs/*.md hold only commands that work: every `argen` line in their ```bash blocks parses
(argen's flags, and torchrun's own parser for the torchrun lines), its --config/--set values load into the
config they name, the cheap ones run, every `argen SUBCOMMAND` they name exists, every `python -m benchmarks
NAME ...` they show names a benchmark and parses with its options, and every file they point at (configs/,
scripts/, docs/, tests/ paths, relative links and pictures) is in the repository."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from argen.cli import build_parser, main
from argen.config import TrainConfig, load_config

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
CHEAP = ("flops", "presets", "fields")  # run in-process; so is any line ending in --help


def _name(page: Path) -> str:
    return str(page.relative_to(REPO))


def bash_lines(page: Path) -> list[str]:
    """A page's ```bash lines, continuations joined, comments dropped."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"(^|\s+)#.*$", "", line).strip()
            if line:
                lines.append(line)
    return lines


def argen_commands(page: Path) -> list[str]:
    """The lines that call argen (placeholders such as `...` left out)."""
    return [
        line for line in bash_lines(page) if line.startswith(("argen ", "torchrun ")) and "..." not in line
    ]


def _argv(line: str) -> tuple[list[str], list[str] | None]:
    """(argen argv, torchrun's own argv or None)."""
    words = shlex.split(line)
    if words[0] == "torchrun":
        at = words.index("-m")
        return words[at + 2 :], words[1:]
    return words[1:], None


COMMANDS = [(_name(page), line) for page in PAGES for line in argen_commands(page)]


def benchmark_commands(page: Path) -> list[str]:
    """The `python -m benchmarks ...` commands of a page's ```bash lines and inline code spans (environment
    settings before them dropped, placeholders such as `...` left out)."""
    spans = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", page.read_text(), flags=re.S))
    found = (re.search(r"python -m benchmarks\b.*", line) for line in [*bash_lines(page), *spans])
    return [m.group(0) for m in found if m and "..." not in m.group(0)]


BENCHMARK_COMMANDS = [(_name(page), line) for page in PAGES for line in benchmark_commands(page)]


def test_the_pages_have_commands() -> None:
    assert (REPO / "README.md").read_text().count("\n") < 300, "the README stays under 300 lines"
    assert {p.name for p in PAGES} >= {
        "README.md",
        "01-methods.md",
        "02-training.md",
        "03-sampling-serving-app.md",
        "04-formats-checkpoints.md",
        "05-benchmarks-results.md",
    }
    assert len(COMMANDS) > 60
    assert any(line.startswith("python -m benchmarks ") for _, line in BENCHMARK_COMMANDS)
    for page in PAGES:
        if page.name[:2].isdigit() or page.name == "README.md":
            assert argen_commands(page), f"{_name(page)} shows no argen command"


@pytest.mark.parametrize("page,line", COMMANDS)
def test_command_parses_and_its_config_loads(page: str, line: str, monkeypatch) -> None:
    monkeypatch.chdir(REPO)
    argv, torchrun = _argv(line)
    if torchrun is not None:
        from torch.distributed.run import get_args_parser

        get_args_parser().parse_args(torchrun)  # "--n" once made torchrun fail: ambiguous with --nnodes
    if argv[-1] == "--help":
        return  # run by test_cheap_commands_run
    args = build_parser().parse_args(argv)
    if args.command == "train":
        load_config(TrainConfig, args.config, args.set, base={"task": args.task})
    elif args.command == "distill":
        from argen.training.distill import DistillConfig

        load_config(DistillConfig, args.config, args.set)
    elif args.command == "eval":
        from argen.eval.evaluate import EvalConfig

        load_config(EvalConfig, args.config, args.set)


@pytest.mark.parametrize("page,line", BENCHMARK_COMMANDS)
def test_benchmark_command_parses(page: str, line: str) -> None:
    from benchmarks import runner

    name, *argv = shlex.split(line)[3:] or ["list"]
    if name == "list":
        return  # `python -m benchmarks` lists them
    assert name in runner.names(), f"{page}: no benchmark {name!r} in `{line}`; there are {runner.names()}"
    try:
        runner.parser_for(name, runner.load(name)).parse_args(argv)  # parsed only, not run
    except SystemExit as stop:
        pytest.fail(f"{page}: `{line}` does not parse (argparse exit {stop.code})")


def test_cheap_commands_run(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(REPO)
    ran = set()
    for page, line in COMMANDS:
        argv, torchrun = _argv(line)
        if torchrun is not None or line in ran:
            continue
        if argv[-1] == "--help":
            with pytest.raises(SystemExit) as stop:
                main(argv)
            assert stop.value.code == 0, f"{page}: {line}"
        elif argv[0] in CHEAP:
            main(argv)
        else:
            continue
        ran.add(line)
    assert {"argen presets", "argen flops --model ear_fmnist"} <= ran
    shipped = ["--model", "ear_any_fmnist", "--tokenizer", "vq2_fmnist"]  # by name, from any directory
    out = tmp_path / "s"
    main(["sample", *shipped, "--schedule", "8", "--classes", "0", "--n-per-class", "2", "--out", str(out)])
    assert (out / "samples.png").is_file()


def _subcommands() -> set[str]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.choices and "sample" in a.choices]
    return set(sub.choices)


# `argen SUBCOMMAND` in code: in a bash block or an inline code span (also `-m argen x`, `.venv/bin/argen x`)
_NAMED = re.compile(r"(?:^|[\s/`(])argen(?: --threads \S+)? ([a-z][a-z-]*)")


def _code(text: str) -> list[str]:
    blocks = re.findall(r"```(?:bash|python|)\n(.*?)```", text, flags=re.S)
    rest = re.sub(r"```.*?```", "", text, flags=re.S)
    return blocks + re.findall(r"`([^`\n]+)`", rest)


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_named_subcommands_exist(page: Path) -> None:
    known = _subcommands()
    named = {m for code in _code(page.read_text()) for m in _NAMED.findall(code)}
    assert named, f"{_name(page)} names no argen subcommand"
    assert named <= known, f"{_name(page)} names {sorted(named - known)}; argen has {sorted(known)}"


# repository paths in prose and commands; placeholders (NAME, <run>, *, XXX) are not files
_PATH = re.compile(r"(?<![\w./-])((?:configs|scripts|docs|tests)/[\w./*-]*\w)")
_LINK = re.compile(r"\]\(([^)\s#]*)(?:#([^)\s]*))?\)")


def _anchors(page: Path) -> set[str]:
    """GitHub's ids of a page's headings: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    titles = re.findall(r"^#+ (.+)$", text, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-") for title in titles}


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_referenced_files_exist(page: Path) -> None:
    text = page.read_text()
    missing = [p for p in _PATH.findall(text) if not re.search(r"NAME|XXX|\*", p) and not (REPO / p).exists()]
    for link, anchor in _LINK.findall(text):
        if re.match(r"[a-z]+:", link):
            continue  # a web address
        target = page.parent / link if link else page
        if not target.is_file() and not target.is_dir():
            missing.append(link)
        elif anchor and target.suffix == ".md" and anchor not in _anchors(target):
            missing.append(f"{link}#{anchor}")
    assert not missing, f"{_name(page)} points at files or sections that do not exist: {missing}"


def test_no_superseded_cpu_configs() -> None:
    assert not sorted((REPO / "configs").glob("*_cpu.json"))
