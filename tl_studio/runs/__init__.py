"""Run folders: their files, writing them atomically, loading, listing, and each run's status.

    runs/<run>/config.json, metrics.csv, steps.csv, summary.json, model.safetensors, last.pt,
               run.lock (while a process writes it)

    info = load_run("runs/lite0")          # config, plan, classes, summary; RunError names a bad file
    find_runs("runs")                      # every run folder under a runs folder
    status("runs/lite0")                   # running | finished | stopped | failed | crashed
    with writing("runs/lite0"): ...        # hold run.lock; a killed writer's leftovers go first
    runs_table("runs")                     # the run history, newest first (runs/table.py)

The training engine writes runs through these functions; everything else
reads them through these functions. Nothing here imports the trainer.
"""

from .files import (
    CONFIG,
    LAST,
    METRICS,
    STEPS,
    SUMMARY,
    WEIGHTS,
    RunError,
    all_finite,
    load_last,
    load_weights,
    plan_sha256,
    read_json,
    read_tables,
    save_last,
    save_weights,
    versions,
    write_json,
    write_tables,
)
from .folders import (
    CRASHED,
    EMPTY,
    ENDED,
    FAILED,
    FINISHED,
    RUNNING,
    STOPPED,
    RunInfo,
    clear,
    find_runs,
    hold,
    is_running,
    load_run,
    made_by,
    status,
    writing,
)
from .lock import LOCK, RunLocked, clean_temp, is_temp, live_lock

__all__ = [
    "CONFIG",
    "CRASHED",
    "EMPTY",
    "ENDED",
    "FAILED",
    "FINISHED",
    "LAST",
    "LOCK",
    "METRICS",
    "RUNNING",
    "STEPS",
    "STOPPED",
    "SUMMARY",
    "WEIGHTS",
    "RunError",
    "RunInfo",
    "RunLocked",
    "all_finite",
    "clean_temp",
    "clear",
    "find_runs",
    "hold",
    "is_running",
    "is_temp",
    "live_lock",
    "load_last",
    "load_run",
    "load_weights",
    "made_by",
    "plan_sha256",
    "read_json",
    "read_tables",
    "save_last",
    "save_weights",
    "status",
    "versions",
    "write_json",
    "write_tables",
    "writing",
]
