"""``tl-studio models``: the curated models, then the timm models found in the Hugging Face cache."""

from __future__ import annotations

from .common import print_json, print_table, records


def add_parser(sub) -> None:
    s = sub.add_parser("models", help="list the curated models and the timm models in the Hugging Face cache")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=run)


def run(args) -> int:
    from ..registry import models_table

    df = models_table()
    print_json(records(df)) if args.json else print_table(df)
    return 0
