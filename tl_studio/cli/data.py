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


QUIET_SECONDS = 1.0  # progress shows once an import has taken this long
PHASES = {"checking": "checking images", "extracting": "unzipping"}  # not the feature pass's "extracting"


def files_meter(view):
    """A ``(fraction, message)`` callback shown as files and files/s, one phase per message.

    The importers report the fraction of files done after each file, so the
    first report of a phase is 1/total: the count follows from the fractions.
    """
    import time

    from ..progress import Meter

    state: dict = {}
    started = time.monotonic()

    def show(event) -> None:
        # An import of a few files says nothing but its result (and an error stays one line).
        if time.monotonic() - started >= QUIET_SECONDS:
            view(event)

    def progress(fraction: float, message: str = "") -> None:
        # "checking images", "extracting NAME" (a zip's members): a phase per first word
        word = (message or "importing").split(" ", 1)[0]
        phase = PHASES.get(word, word)
        if state.get("phase") != phase or fraction <= 0:
            total = max(1, round(1 / fraction)) if fraction > 0 else 1
            # the rate counts from this first file on (the meter starts when it is reported)
            state.update(phase=phase, meter=Meter(phase, total, "files", show, start=min(1, total)))
        meter = state["meter"]
        meter.update(min(round(fraction * meter.total), meter.total))

    return progress


def run(args) -> int:
    from ..data import DatasetError, load_dataset
    from .progress import ProgressView

    # a zip is extracted into a directory that goes away with the command
    with tempfile.TemporaryDirectory(prefix="tl-studio-data-") as work:
        try:
            with ProgressView() as view:
                ds = load_dataset(args.path, workdir=work, val_fraction=args.val_fraction, seed=args.seed,
                                  progress=files_meter(view))
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
