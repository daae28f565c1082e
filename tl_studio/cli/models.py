"""``tl-studio models``: the model registry."""

from __future__ import annotations

from .common import print_json, print_table, records


def add_parser(sub) -> None:
    s = sub.add_parser("models", help="list the model registry")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=run)


def run(args) -> int:
    from ..registry import models_table

    df = models_table()
    print_json(records(df)) if args.json else print_table(df)
    return 0
