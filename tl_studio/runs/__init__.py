"""Run folders: their files, writing them atomically, loading, listing, and each run's status.

    runs/<run>/config.json, metrics.csv, steps.csv, summary.json, model.safetensors, last.pt

    info = load_run("runs/lite0")          # config, plan, classes, summary; RunError names a bad file
    find_runs("runs")                      # every run folder under a runs folder
    status("runs/lite0")                   # finished | stopped | failed | running | incomplete
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
    write_tables,
)
from .folders import (
    ENDED,
    FAILED,
    FINISHED,
    INCOMPLETE,
    RUNNING,
    STOPPED,
    RunInfo,
    find_runs,
    hold,
    is_running,
    load_run,
    status,
    writing,
)

__all__ = [
    "CONFIG",
    "ENDED",
    "FAILED",
    "FINISHED",
    "INCOMPLETE",
    "LAST",
    "METRICS",
    "RUNNING",
    "STEPS",
    "STOPPED",
    "SUMMARY",
    "WEIGHTS",
    "RunError",
    "RunInfo",
    "all_finite",
    "find_runs",
    "hold",
    "is_running",
    "load_last",
    "load_run",
    "load_weights",
    "plan_sha256",
    "read_json",
    "read_tables",
    "save_last",
    "save_weights",
    "status",
    "versions",
    "write_tables",
    "writing",
]
