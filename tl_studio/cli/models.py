"""``tl-studio models``: the curated models (whether their weights are cached, and where), then the timm
models found in the Hugging Face cache."""

from __future__ import annotations

from .common import add_json_flag, print_json, print_table, records

# The columns people read; --json has every column (preprocessing mean and std too).
TABLE = ["model", "weights", "input_size", "description", "weights_file"]


def add_parser(sub) -> None:
    s = sub.add_parser("models", help="list the models, whether their weights are cached, and where",
                       description="Every curated model, then the timm models in the Hugging Face cache. weights: "
                                   "embedded (inside a package), cached (downloaded before) or not cached "
                                   "(downloads on first use, needs the network).")
    add_json_flag(s)
    s.set_defaults(func=run)


def run(args) -> int:
    from ..registry import models_table

    df = models_table()
    print_json(records(df)) if args.json else print_table(df[[c for c in TABLE if c in df]])
    return 0
