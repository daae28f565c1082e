"""Run history: every run under a runs folder (:func:`tl_studio.runs.table.runs_table`), comparing runs,
deleting one.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pandas as pd

from .. import runs
from ..runs import find_runs  # re-exported: part of the evaluation API
from ..runs.table import COLUMNS, runs_table  # re-exported: part of the evaluation API

log = logging.getLogger(__name__)

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
