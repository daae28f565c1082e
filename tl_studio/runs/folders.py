"""Run folders as a whole: loading one, finding them under a runs folder, and each one's status.

A run's status is "running" while something writes it: a job in this
process (a queued job announces it with :func:`hold`) or any process
holding its live ``run.lock`` (:func:`writing`, which the trainer enters).
Otherwise it is what its ``summary.json`` says (finished, stopped or
failed), written when training ends, and "crashed" when there is no summary
or a dead writer's lock is left: the writer was killed. This module knows
nothing of jobs.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from ..plan import Plan, PlanError
from .files import CONFIG, LAST, METRICS, STEPS, SUMMARY, WEIGHTS, RunError, read_json
from .lock import LOCK, RunLock, RunLocked, clean_temp, describe, live_lock, read_lock

FINISHED, STOPPED, FAILED, RUNNING, CRASHED, EMPTY = "finished", "stopped", "failed", "running", "crashed", "empty"
# What a summary may say; anything else (or no summary, with nobody writing) is "crashed".
ENDED = (FINISHED, STOPPED, FAILED)
# Every file a run's writers make (and --overwrite removes), besides temporary ones.
RUN_FILES = (CONFIG, METRICS, STEPS, SUMMARY, WEIGHTS, LAST, LOCK)
RUN_FOLDERS = ("evaluation", "export", "dataset")

_held: collections.Counter[Path] = collections.Counter()
_held_lock = threading.Lock()


@dataclass
class RunInfo:
    path: Path
    config: dict
    plan: Plan
    classes: list[str]
    summary: dict

    @property
    def weights(self) -> Path:
        return self.path / WEIGHTS


def load_run(run_dir: str | Path) -> RunInfo:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: not a run directory")
    config = read_json(run_dir / CONFIG)
    if not isinstance(config, dict):
        raise RunError(f"{run_dir / CONFIG}: not a run configuration")
    try:
        plan = Plan.from_dict(config["plan"])
    except (KeyError, TypeError, PlanError) as exc:
        raise RunError(f"{run_dir / CONFIG}: bad plan ({exc}){made_by(config)}") from None
    classes = list(config.get("dataset", {}).get("classes", []))
    summary_path = run_dir / SUMMARY
    summary = read_json(summary_path) if summary_path.exists() else {}
    return RunInfo(run_dir, config, plan, classes, summary)


def find_runs(runs_dir: str | Path) -> list[Path]:
    """Run directories under ``runs_dir`` (not following links; hidden folders skipped)."""
    root = Path(runs_dir)
    found = []
    for here, dirs, files in os.walk(root, followlinks=False):
        if CONFIG in files and Path(here) != root:
            found.append(Path(here))
            dirs[:] = []  # a run's own sub-folders (evaluation/, export/) are not runs
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    return found


def hold(run_dir: str | Path) -> Callable[[], None]:
    """Mark ``run_dir`` as being written by this process until the returned function is called.

    Holds nest (a queued job holds its run, and its trainer holds it again
    while it writes); the run is "running" while any hold is left.
    """
    key = Path(run_dir).resolve()
    with _held_lock:
        _held[key] += 1
    left = [1]  # released at most once, however often release() is called

    def release() -> None:
        with _held_lock:
            if not left[0]:
                return
            left[0] = 0
            _held[key] -= 1
            if _held[key] <= 0:
                del _held[key]

    return release


def made_by(config: dict) -> str:
    """"; made by tl_studio X" for messages about a run this version cannot use ("" if unknown)."""
    versions = config.get("versions") if isinstance(config, dict) else None
    made = versions.get("tl_studio") if isinstance(versions, dict) else None
    if made is None:
        return "; made by an unknown, older tl_studio"
    from ..version import __version__

    return f"; made by tl_studio {made}" + (f", this is {__version__}" if made != __version__ else "")


@contextlib.contextmanager
def writing(run_dir: str | Path) -> Iterator[None]:
    """Write ``run_dir`` for the length of a ``with`` block: :func:`hold` it and its ``run.lock``.

    Refused with :class:`RunLocked` while another live process (or another
    job here) writes it. Temporary files left by a killed writer go first.
    """
    release = hold(run_dir)
    try:
        with RunLock(run_dir):
            yield
    finally:
        release()


def clear(run_dir: str | Path) -> list[str]:
    """Remove a run's own files and folders (for starting it over); anything else in the folder stays.

    Refused with :class:`RunLocked` while anyone is writing the run.
    """
    run_dir = Path(run_dir)
    if is_running(run_dir):
        raise RunLocked(f"{run_dir}: a job in this process is writing this run")
    held = live_lock(run_dir)
    if held is not None:
        raise RunLocked(f"{run_dir}: being written by {describe(held)}")
    removed = clean_temp(run_dir)
    for name in RUN_FILES:
        if (run_dir / name).is_file():
            (run_dir / name).unlink()
            removed.append(name)
    for name in RUN_FOLDERS:
        sub = run_dir / name
        if sub.is_dir() and not sub.is_symlink():
            shutil.rmtree(sub)
            removed.append(name + "/")
    return removed


def is_running(run_dir: str | Path) -> bool:
    """Whether a job or trainer in this process holds ``run_dir`` (see :func:`writing`)."""
    with _held_lock:
        return Path(run_dir).resolve() in _held


def status(run_dir: str | Path) -> str:
    """"running" | "finished" | "stopped" | "failed" | "crashed" | "empty" for a run folder.

    "running": a job in this process holds the run, or a live process holds
    its ``run.lock``. Otherwise a lock left behind means its writer was
    killed: "crashed". Then what ``summary.json`` says, and "crashed" when it
    is missing or unreadable; "empty" when the folder holds no run at all (a
    job that never started).
    """
    run_dir = Path(run_dir)
    if is_running(run_dir):
        return RUNNING
    lock = read_lock(run_dir)
    if lock is not None:
        return RUNNING if live_lock(run_dir) is not None else CRASHED
    if not (run_dir / CONFIG).is_file():
        return EMPTY
    try:
        summary = json.loads((run_dir / SUMMARY).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return CRASHED
    said = summary.get("status") if isinstance(summary, dict) else None
    return said if said in ENDED else CRASHED
