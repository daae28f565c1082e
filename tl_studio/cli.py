"""The ``tl-studio`` command line.

Every command prints a table for people and, with ``--json``, JSON for
scripts. On bad input a command exits non-zero with a one-line reason.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

import pandas as pd

log = logging.getLogger("tl_studio.cli")


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def _print_table(df: pd.DataFrame) -> None:
    with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 200):
        print(df.to_string(index=False))


def _print_json(data) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def _records(df: pd.DataFrame) -> list[dict]:
    return json.loads(df.to_json(orient="records"))


# ---- commands -----------------------------------------------------------------
def cmd_models(args) -> int:
    from .registry import models_table

    df = models_table()
    _print_json(_records(df)) if args.json else _print_table(df)
    return 0


def cmd_layers(args) -> int:
    from .layers import layer_table
    from .registry import get_spec

    try:
        get_spec(args.model)
    except KeyError as exc:
        raise CLIError(exc.args[0]) from None
    df = layer_table(args.model, "fine" if args.fine else "coarse")
    _print_json(_records(df)) if args.json else _print_table(df)
    return 0


def cmd_ui(args) -> int:
    from .ui.launch import run

    run(args)
    return 0


# Other areas add their sub-commands here: each entry is "module:function",
# the function taking argparse's sub-parsers object.
COMMAND_PROVIDERS: list[str] = [
    ".data.cli:add_parser",
    ".train.cli:add_parser",
    ".strategy.cli:add_parser",
    ".evaluate.cli:add_parser",
]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tl-studio", description="Transfer learning on images.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("models", help="list the model registry")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_models)

    s = sub.add_parser("layers", help="print a model's layer table")
    s.add_argument("model")
    s.add_argument("--fine", action="store_true", help="every single module, not stages/blocks")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_layers)

    import importlib

    s = sub.add_parser("ui", help="start the browser app (same as python launch.py)")
    from .ui.launch import add_arguments  # argparse only: gradio loads when the app starts

    add_arguments(s)
    s.set_defaults(func=cmd_ui)

    for provider in COMMAND_PROVIDERS:
        module, func = provider.split(":")
        getattr(importlib.import_module(module, __package__), func)(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    from .runtime import configure_logging, tune_allocator

    args = _parser().parse_args(argv)
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

