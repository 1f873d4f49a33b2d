"""The `argen` command line: each subcommand turns its flags into a config dataclass and calls the library.

argen train <task> [--config F] [--set key=value ...] [--resume]
argen distill [--config F] [--set key=value ...]
argen tokenize --tokenizer T --out tokens.npz [--split train]
argen sample --model M --tokenizer T [--classes 0,1] [--schedule 8] [--gif]
argen extend --model M --tokenizer T --centre 8 --canvas 24
argen eval --samples S.npz | --model M --tokenizer T --n 1000
argen bench --model M --tokenizer T [--batch-sizes 1,64]
argen flops --model M
argen convert --official var_d16.pth --kind var --preset d16 --out var_d16
argen plot results/*.json --out plot.png
argen demo --out out/demo
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from argen.cli import evaluate, models, sample, train

COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    train.add_training,
    sample.add_sampling,
    evaluate.add_evaluation,
    models.add_models,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="argen",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def _version() -> str:
    import argen

    return f"argen {argen.__version__}"


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as e:
        # User errors (bad config, missing data, mismatched checkpoint) get one clear message, no traceback.
        print(f"argen {args.command}: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"argen {args.command}: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
