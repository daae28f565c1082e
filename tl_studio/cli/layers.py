"""``tl-studio layers MODEL``: a model's layer table."""

from __future__ import annotations

from .common import CLIError, add_json_flag, print_json, print_table, records


def add_parser(sub) -> None:
    s = sub.add_parser("layers", help="print a model's layer table")
    s.add_argument("model")
    s.add_argument("--fine", action="store_true", help="every single module, not stages/blocks")
    add_json_flag(s)
    s.set_defaults(func=run)


def run(args) -> int:
    from ..layers import layer_table
    from ..registry import get_spec

    try:
        get_spec(args.model)
    except KeyError as exc:
        raise CLIError(exc.args[0]) from None
    df = layer_table(args.model, "fine" if args.fine else "coarse")
    print_json(records(df)) if args.json else print_table(df)
    return 0
