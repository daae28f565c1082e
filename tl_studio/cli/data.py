"""``tl-studio data PATH``: import a dataset and print its summary."""

from __future__ import annotations

import json
import tempfile

from .common import CLIError, add_json_flag, non_negative_int, open_fraction


def add_parser(sub) -> None:
    s = sub.add_parser("data", help="check a dataset (folder, .zip or .csv) and print its summary")
    s.add_argument("path", help="a folder in ImageFolder layout, a .zip of one, or a CSV of path,label")
    add_json_flag(s)
    s.add_argument("--val-fraction", type=open_fraction, default=0.2, metavar="F",
                   help="validation share (default 0.2)")
    s.add_argument("--seed", type=non_negative_int, default=0, metavar="S", help="split seed (default 0)")
    s.set_defaults(func=run)


def _table(title: str, df) -> None:
    import pandas as pd

    print(f"\n{title}")
    if df.empty:
        print("  (none)")
        return
    with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 200,
                           "display.max_colwidth", 120):
        print(df.to_string(index=False))


def run(args) -> int:
    from ..data import DatasetError, load_dataset

    # a zip is extracted into a directory that goes away with the command
    with tempfile.TemporaryDirectory(prefix="tl-studio-data-") as work:
        try:
            ds = load_dataset(args.path, workdir=work, val_fraction=args.val_fraction, seed=args.seed)
        except DatasetError as exc:
            raise CLIError(str(exc)) from None
        s = ds.summary
        if args.json:
            out = {"path": str(args.path), "fingerprint": ds.fingerprint, **s.to_dict()}
            print(json.dumps(out, indent=2, ensure_ascii=False, default=str))
            return 0
        c = s.counts
        print(
            f"{args.path}: {c['images']} images in {c['classes']} classes; "
            f"split ({s.split}): {c['train']} train, {c['val']} val; {c['skipped']} skipped"
        )
        _table("classes", s.classes)
        _table("skipped files", s.skipped)
        _table("warnings", s.warnings)
    return 0
