"""Run history: every run under a runs folder, comparing runs, deleting one.

A run is any directory holding a ``config.json`` (``runs/<run>`` or, with
workspaces, ``runs/<workspace>/<run>``). Broken runs are listed too, with the
reason in ``status``, so they can be found and deleted; one unreadable run
never hides the others.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pandas as pd

from ..plan import Plan, PlanError
from ..train import rundir

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
INCOMPLETE = "incomplete"  # no summary.json: still running, or interrupted
RUNNING = "running"


def find_runs(runs_dir: str | Path) -> list[Path]:
    """Run directories under ``runs_dir`` (not following links; hidden folders skipped)."""
    root = Path(runs_dir)
    found = []
    for here, dirs, files in os.walk(root, followlinks=False):
        if rundir.CONFIG in files and Path(here) != root:
            found.append(Path(here))
            dirs[:] = []  # a run's own sub-folders (evaluation/, export/) are not runs
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    return found


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


def _active_run_dirs() -> set[Path]:
    """Run directories of jobs queued or running in this process."""
    from ..train import REGISTRY

    return {Path(j.run_dir).resolve() for j in REGISTRY.active() if j.run_dir is not None}


def _row(run: Path, root: Path, active: set[Path]) -> dict:
    row = dict.fromkeys(COLUMNS)
    row.update(run=run.relative_to(root).as_posix(), path=str(run.resolve()))
    try:
        info = rundir.load_run(run)
    except rundir.RunError as exc:
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
            epochs = rundir.read_tables(run)["epochs"]
        except (OSError, pd.errors.ParserError) as exc:
            log.warning("%s: unreadable %s (%s)", run, rundir.METRICS, exc)
            epochs = None
        if epochs is not None and len(epochs):
            row["epochs"] = row["epochs"] if row["epochs"] is not None else int(epochs["epoch"].max())
            if row["best_val_accuracy"] is None and "val_accuracy" in epochs:
                row["best_val_accuracy"] = float(epochs["val_accuracy"].max())
    row["status"] = RUNNING if run.resolve() in active else s.get("status", INCOMPLETE)
    return row


def runs_table(runs_dir: str | Path) -> pd.DataFrame:
    """Every run under ``runs_dir``, newest first (an empty table when there is none)."""
    root = Path(runs_dir)
    if not root.is_dir():
        return pd.DataFrame(columns=COLUMNS)
    active = _active_run_dirs()
    rows = [_row(r, root, active) for r in find_runs(root)]
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
    runs = []
    for name, p in zip(names, paths):
        try:
            epochs = rundir.read_tables(p)["epochs"]
        except (OSError, pd.errors.ParserError) as exc:
            log.warning("%s: unreadable %s (%s)", p, rundir.METRICS, exc)
            epochs = None
        runs.append((name, epochs))
    return compare_figure(runs)


def _inside(candidate: Path, root: Path) -> bool:
    return candidate != root and candidate.is_relative_to(root)


def delete_run(run_dir: str | Path, *, runs_dir: str | Path) -> None:
    """Delete one run directory, which must lie inside ``runs_dir``.

    A relative ``run_dir`` may be given as the table's ``run`` column (relative
    to ``runs_dir``) or relative to the working directory. Refuses, with
    :class:`~tl_studio.train.rundir.RunError`, anything that is not a run
    directory inside ``runs_dir``, a symbolic link, the runs folder itself,
    and a run whose training job is still active.
    """
    root = Path(runs_dir).resolve()
    if not root.is_dir():
        raise rundir.RunError(f"{runs_dir}: runs folder not found")
    given = Path(run_dir)
    candidates = [given] if given.is_absolute() else [given, Path(runs_dir) / given]
    matches = []
    for c in candidates:
        if c.is_symlink():
            raise rundir.RunError(f"{run_dir}: is a symbolic link; refusing to delete through it")
        if not c.exists():
            continue
        real = c.resolve()
        if _inside(real, root) and real not in matches:
            matches.append(real)
    if not matches:
        raise rundir.RunError(f"{run_dir}: not a run directory inside {runs_dir}")
    if len(matches) > 1:
        raise rundir.RunError(f"{run_dir}: ambiguous (both {matches[0]} and {matches[1]} exist); give the full path")
    target = matches[0]
    if not target.is_dir() or not (target / rundir.CONFIG).is_file():
        raise rundir.RunError(f"{run_dir}: not a run directory (no {rundir.CONFIG}); nothing deleted")
    if target in _active_run_dirs():
        raise rundir.RunError(f"{run_dir}: its training job is still running; stop it first")
    shutil.rmtree(target)
    log.info("deleted run %s", target)
