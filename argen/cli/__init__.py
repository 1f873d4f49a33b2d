"""The `argen` command line: each subcommand turns its flags into a config dataclass and calls the library.

argen train <task> [--config F] [--set key=value ...] [--resume]
argen distill [--config F] [--set key=value ...]
argen tokenize --tokenizer T --out tokens.npz [--split train]
argen sample --model M --tokenizer T [--classes 0,1] [--schedule 8] [--gif]
argen extend --model M --tokenizer T --centre 8 --canvas 24
argen eval --samples S.npz | --model M --tokenizer T --n 1000
argen bench --model M --tokenizer T [--batch-sizes 1,64]
argen flops --model M
argen peak [--dtypes fp32,bf16]
argen convert --official var_d16.pth --kind var --preset d16 --out var_d16
argen plot results/*.json --out plot.png
argen demo --out out/demo
argen presets [task]; argen fields train|distill|eval|model:<task>
argen app [--port 7860]   (web page; needs pip install -e .[app])
argen serve --model ear_fmnist [--port 8000]   (HTTP API; needs pip install -e .[serve]); argen serve-bench
"""

from __future__ import annotations

import argparse
import errno
import sys
import warnings
from collections.abc import Callable
from typing import Any

from argen.cli import app, evaluate, info, models, peak, sample, serve, train
from argen.cli.common import positive_int
from argen.runtime import keep_freed_memory

COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    train.add_training,
    sample.add_sampling,
    evaluate.add_evaluation,
    models.add_models,
    info.add_info,
    app.add_app,
    peak.add_peak,
    serve.add_serve,
]


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Ends a flag's help with "(default: X)" unless the help already says its default in words, or there is
    none to show (a required flag, a default of None, False, "" or [])."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        nothing = action.default is None or action.default is False or action.default in ("", [])  # 0 is one
        if nothing or action.required or "(default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class _CommandParser(argparse.ArgumentParser):
    """Subcommand parser whose --help shows every flag's default."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _DefaultsFormatter)
        super().__init__(*args, **kwargs)


# Commands whose work is a loop of equal-sized steps, where keeping freed memory (argen.runtime) pays. Not
# the others: with mmap off, a job whose arrays keep growing (tokenize's) fragments the heap without bound.
SAMPLING_COMMANDS = ("sample", "generate", "extend", "bench", "eval", "serve")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="argen",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument(
        "--threads",
        type=positive_int,
        help="CPU threads torch may use (default: torch's choice; on a busy machine fewer can be faster)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_CommandParser)
    for add in COMMANDS:
        add(sub)
    return parser


def _version() -> str:
    import argen

    return f"argen {argen.__version__}"


def _one_line_warning(message: Any, category: type, filename: str, lineno: int, line: Any = None) -> str:
    return f"argen: warning: {message}\n"


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    warnings.formatwarning = _one_line_warning
    if args.command in SAMPLING_COMMANDS:  # per-step tensors reuse memory instead of page-faulting
        keep_freed_memory()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as e:
        # User errors (bad config, missing data, mismatched checkpoint) get one clear message, no traceback.
        print(f"argen {args.command}: error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS):
            raise
        # Writers go through a temporary file and a rename: what was there before is intact.
        where = f" ({e.filename})" if e.filename else ""
        print(
            f"argen {args.command}: error: {e.strerror}{where}; nothing was left half-written and earlier "
            "files are intact: free space (or fix permissions) and run the command again",
            file=sys.stderr,
        )
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"argen {args.command}: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
