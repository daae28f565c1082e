"""Run folders as a whole: loading one, finding them under a runs folder, and each one's status.

A run's status is read from its ``summary.json``, written once when training
ends (finished, stopped or failed), except while something in this process
is writing the run: then it is "running". The trainer (and a queued job)
announce that with :func:`hold` or :func:`writing`; this module knows nothing of jobs.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from ..plan import Plan, PlanError
from .files import CONFIG, SUMMARY, WEIGHTS, RunError, read_json

FINISHED, STOPPED, FAILED, RUNNING, INCOMPLETE = "finished", "stopped", "failed", "running", "incomplete"
# What a summary may say; anything else (or no summary) is "incomplete": crashed, killed or still starting.
ENDED = (FINISHED, STOPPED, FAILED)

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
    try:
        plan = Plan.from_dict(config["plan"])
    except (KeyError, PlanError) as exc:
        raise RunError(f"{run_dir / CONFIG}: bad plan ({exc})") from None
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


@contextlib.contextmanager
def writing(run_dir: str | Path) -> Iterator[None]:
    """:func:`hold` for the length of a ``with`` block."""
    release = hold(run_dir)
    try:
        yield
    finally:
        release()


def is_running(run_dir: str | Path) -> bool:
    """Whether a job or trainer in this process holds ``run_dir`` (see :func:`writing`)."""
    with _held_lock:
        return Path(run_dir).resolve() in _held


def status(run_dir: str | Path) -> str:
    """"finished" | "stopped" | "failed" | "running" | "incomplete" for a run folder.

    "running" means a job in this process holds the run; otherwise the status
    is what ``summary.json`` says, and "incomplete" when it is missing or
    unreadable (a crash, a kill, or a run another process is writing).
    """
    if is_running(run_dir):
        return RUNNING
    try:
        summary = json.loads((Path(run_dir) / SUMMARY).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return INCOMPLETE
    said = summary.get("status") if isinstance(summary, dict) else None
    return said if said in ENDED else INCOMPLETE
