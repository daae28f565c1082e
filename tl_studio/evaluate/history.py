"""Run history: every run under a runs folder, comparing runs, deleting one.

A run is any directory holding a ``config.json`` (``runs/<run>`` or, with
workspaces, ``runs/<workspace>/<run>``; :func:`tl_studio.runs.find_runs`).
Broken runs are listed too, with the reason in ``status``, so they can be
found and deleted; one unreadable run never hides the others. Every other
run's ``status`` is :func:`tl_studio.runs.status`.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pandas as pd

from .. import runs
from ..plan import Plan, PlanError
from ..runs import find_runs  # re-exported: part of the evaluation API

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


def plan_summary(plan: Plan) -> str:
    """One line: e.g. "frozen 17/18, cut after blocks.14, taps 3, head 2xFC (hidden 256)"."""
    from ..states import FROZEN_S, layer_states

    try:
        st = layer_states(plan)
    except PlanError as exc:
        return f"invalid plan: {exc}"
    # Layers without parameters (pooling) have nothing to freeze; they are not counted.
    with_params = [s for s in st.kept if s.params > 0]
    n_frozen = sum(s.state == FROZEN_S for s in with_params)
    parts = [f"frozen {n_frozen}/{len(with_params)}"]
    taps = st.taps
    if st.cut < len(st.layers) - 1:
        parts.append(f"cut after {st.layers[st.cut].name}")
    if taps:
        parts.append(f"taps {len(taps)}")
    h = plan.head
    parts.append(f"head {h.fc_layers}xFC" + (f" (hidden {h.hidden})" if h.hidden else ""))
    if plan.bn == "train":
        parts.append("BN trains")
    if plan.head_warmup_epochs:
        parts.append(f"head warm-up {plan.head_warmup_epochs}")
    if plan.unfreeze_all_at is not None:
        parts.append(f"unfreeze all at epoch {plan.unfreeze_all_at}")
    return ", ".join(parts)


def _row(run: Path, root: Path) -> dict:
    row = dict.fromkeys(COLUMNS)
    row.update(run=run.relative_to(root).as_posix(), path=str(run.resolve()))
    try:
        info = runs.load_run(run)
    except runs.RunError as exc:
        row["status"] = f"unreadable: {exc}"
        return row
    s, cfg = info.summary, info.config
    row["model"] = info.plan.model
    row["plan"] = plan_summary(info.plan)
    row["device"] = s.get("device") or cfg.get("device")
    row["date"] = cfg.get("created")
    row["train_seconds"] = s.get("train_seconds")
    row["epochs"] = s.get("epochs_run")
    row["best_val_accuracy"] = s.get("best_val_accuracy")
    if row["epochs"] is None or row["best_val_accuracy"] is None:
        try:
            epochs = runs.read_tables(run)["epochs"]
        except (OSError, pd.errors.ParserError) as exc:
            log.warning("%s: unreadable %s (%s)", run, runs.METRICS, exc)
            epochs = None
        if epochs is not None and len(epochs):
            row["epochs"] = row["epochs"] if row["epochs"] is not None else int(epochs["epoch"].max())
            if row["best_val_accuracy"] is None and "val_accuracy" in epochs:
                row["best_val_accuracy"] = float(epochs["val_accuracy"].max())
    row["status"] = runs.status(run)
    return row


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


def compare_runs_figure(run_dirs):
    """Validation accuracy and losses of several runs overlaid, one colour per run."""
    from .figures import compare_figure

    paths = [Path(r) for r in run_dirs]
    names = [p.name for p in paths]
    # Same folder name in two workspaces: show the parent too.
    names = [f"{p.parent.name}/{p.name}" if names.count(p.name) > 1 else p.name for p in paths]
    curves = []
    for name, p in zip(names, paths):
        try:
            epochs = runs.read_tables(p)["epochs"]
        except (OSError, pd.errors.ParserError) as exc:
            log.warning("%s: unreadable %s (%s)", p, runs.METRICS, exc)
            epochs = None
        curves.append((name, epochs))
    return compare_figure(curves)


def _inside(candidate: Path, root: Path) -> bool:
    return candidate != root and candidate.is_relative_to(root)


def delete_run(run_dir: str | Path, *, runs_dir: str | Path) -> None:
    """Delete one run directory, which must lie inside ``runs_dir``.

    A relative ``run_dir`` may be given as the table's ``run`` column (relative
    to ``runs_dir``) or relative to the working directory. Refuses, with
    :class:`~tl_studio.runs.RunError`, anything that is not a run
    directory inside ``runs_dir``, a symbolic link, the runs folder itself,
    and a run whose training job is still active.
    """
    root = Path(runs_dir).resolve()
    if not root.is_dir():
        raise runs.RunError(f"{runs_dir}: runs folder not found")
    given = Path(run_dir)
    candidates = [given] if given.is_absolute() else [given, Path(runs_dir) / given]
    matches = []
    for c in candidates:
        if c.is_symlink():
            raise runs.RunError(f"{run_dir}: is a symbolic link; refusing to delete through it")
        if not c.exists():
            continue
        real = c.resolve()
        if _inside(real, root) and real not in matches:
            matches.append(real)
    if not matches:
        raise runs.RunError(f"{run_dir}: not a run directory inside {runs_dir}")
    if len(matches) > 1:
        raise runs.RunError(f"{run_dir}: ambiguous (both {matches[0]} and {matches[1]} exist); give the full path")
    target = matches[0]
    if not target.is_dir() or not (target / runs.CONFIG).is_file():
        raise runs.RunError(f"{run_dir}: not a run directory (no {runs.CONFIG}); nothing deleted")
    if runs.status(target) == runs.RUNNING:  # a job here, or another process holding its run.lock
        raise runs.RunError(f"{run_dir}: its training job is still running; stop it first")
    shutil.rmtree(target)
    log.info("deleted run %s", target)
