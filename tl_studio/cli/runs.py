"""``tl-studio runs``: the runs under a runs folder, newest first, each with its status."""

from __future__ import annotations

from pathlib import Path

from .common import CLIError, add_json_flag, print_json, print_table, records


def add_parser(sub) -> None:
    s = sub.add_parser("runs", help="list the runs under a runs folder, newest first")
    s.add_argument("--runs-dir", default="runs")
    add_json_flag(s)
    s.set_defaults(func=run)


def run(args) -> int:
    from ..runs.table import runs_table  # no torch: listing runs starts fast

    root = Path(args.runs_dir)
    if not root.is_dir():
        raise CLIError(f"{root}: no such runs folder")
    df = runs_table(root)  # its status column is runs.status() of each run
    if args.json:
        print_json(records(df))
        return 0
    if not len(df):
        print(f"no runs under {root}")
        return 0
    print_table(df.drop(columns=["path"]))
    return 0
