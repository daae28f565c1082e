"""The ``tl-studio`` parser and entry point (``[project.scripts]`` and ``python -m tl_studio``)."""

from __future__ import annotations

import argparse
import sys

from . import data, evaluate, export, layers, models, predict, recommend, runs, train, ui
from .common import CLIError

# In the order ``tl-studio --help`` lists them.
COMMANDS = (models, layers, ui, data, train, predict, export, recommend, evaluate, runs)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tl-studio", description="Transfer learning on images.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    from ..runtime import configure_logging, tune_allocator

    args = parser().parse_args(argv)
    configure_logging(args.verbose)
    tune_allocator()
    try:
        return int(args.func(args) or 0)
    except CLIError as exc:
        print(f"tl-studio {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tl-studio {args.command}: interrupted", file=sys.stderr)
        return 130
