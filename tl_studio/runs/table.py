"""The run history as a table: every run under a runs folder, newest first, each with its status.

A run is any directory holding a ``config.json`` (``runs/<run>`` or, with
workspaces, ``runs/<workspace>/<run>``; :func:`find_runs`). Broken runs are
listed too, with the reason in ``status``, so they can be found and deleted;
one unreadable run never hides the others. Every other run's ``status`` is
:func:`status`. Reading the table needs no torch (``tl-studio runs``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from .files import METRICS, plan_sha256, read_tables
from .folders import RunError, find_runs, load_run, status

log = logging.getLogger(__name__)

COLUMNS = [
    "run",
    "path",
    "model",
    "plan",
    "epochs",
    "best_val_accuracy",
    "train_seconds",
    "device",
    "date",
    "status",
]


def _row(run: Path, root: Path) -> dict:
    row = dict.fromkeys(COLUMNS)
    row.update(run=run.relative_to(root).as_posix(), path=str(run.resolve()))
    try:
        info = load_run(run)
    except RunError as exc:
        row["status"] = f"unreadable: {exc}"
        return row
    s, cfg = info.summary, info.config
    row["model"] = info.plan.model
    row["plan"] = _plan_line(cfg, info.plan)
    row["device"] = s.get("device") or cfg.get("device")
    row["date"] = cfg.get("created")
    row["train_seconds"] = s.get("train_seconds")
    row["epochs"] = s.get("epochs_run")
    row["best_val_accuracy"] = s.get("best_val_accuracy")
    if row["epochs"] is None or row["best_val_accuracy"] is None:
        try:
            epochs = read_tables(run)["epochs"]
        except (OSError, pd.errors.ParserError) as exc:
            log.warning("%s: unreadable %s (%s)", run, METRICS, exc)
            epochs = None
        if epochs is not None and len(epochs):
            row["epochs"] = row["epochs"] if row["epochs"] is not None else int(epochs["epoch"].max())
            if row["best_val_accuracy"] is None and "val_accuracy" in epochs:
                row["best_val_accuracy"] = float(epochs["val_accuracy"].max())
    row["status"] = status(run)
    return row


def _plan_line(cfg: dict, plan) -> str:
    """The trainer's stored summary of the plan when it still matches the plan; else computed.

    Computing it needs the model's layout, hence torch; reading it lets
    ``tl-studio runs`` start without torch.
    """
    stored = cfg.get("plan_summary")
    if isinstance(stored, dict) and isinstance(cfg.get("plan"), dict):
        if stored.get("plan_sha256") == plan_sha256(cfg["plan"]) and isinstance(stored.get("text"), str):
            return stored["text"]
    from ..states import plan_summary

    return plan_summary(plan)


def runs_table(runs_dir: str | Path) -> pd.DataFrame:
    """Every run under ``runs_dir``, newest first (an empty table when there is none)."""
    root = Path(runs_dir)
    if not root.is_dir():
        return pd.DataFrame(columns=COLUMNS)
    rows = [_row(r, root) for r in find_runs(root)]
    if not rows:
        return pd.DataFrame(columns=COLUMNS)
    df = pd.DataFrame(rows, columns=COLUMNS)
    created = pd.to_datetime(df["date"], utc=True, errors="coerce", format="ISO8601")
    # Runs without a readable date sort by their folder's modification time.
    mtimes = pd.to_datetime([Path(p).stat().st_mtime for p in df["path"]], unit="s", utc=True)
    order = created.fillna(pd.Series(mtimes, index=df.index).astype(created.dtype))
    df["date"] = order.dt.strftime("%Y-%m-%d %H:%M")
    return df.iloc[order.argsort(kind="stable")[::-1]].reset_index(drop=True)
