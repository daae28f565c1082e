"""``tl-studio models``: the model registry, and where each model's weights are."""

from __future__ import annotations

from .common import add_json_flag, print_json, print_table, records

# The columns people read; --json has every column (preprocessing mean and std too).
TABLE = ["model", "weights", "input_size", "description", "weights_file"]


def add_parser(sub) -> None:
    s = sub.add_parser("models", help="list the models, whether their weights are cached, and where",
                       description="Every registered model. weights: embedded (inside a package), cached "
                                   "(downloaded before) or not cached (downloads on first use, needs the network).")
    add_json_flag(s)
    s.set_defaults(func=run)


def run(args) -> int:
    from ..registry import models_table

    df = models_table()
    print_json(records(df)) if args.json else print_table(df[[c for c in TABLE if c in df]])
    return 0
