"""The metrics log a training thread writes and any other thread reads.

The lock is held only to append a row or copy the lists, so a reader (the UI
polling every second) never slows training measurably.
"""

from __future__ import annotations

import threading
import time

import pandas as pd

from ..progress import Progress

STEP_COLUMNS = ["step", "epoch", "loss", "lr", "images_per_second", "elapsed"]
EPOCH_COLUMNS = [
    "epoch",
    "phase",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "lr",
    "images_per_second",
    "elapsed",
    "cached",
]


class MetricsLog:
    def __init__(self):
        self._lock = threading.Lock()
        self._steps: list[dict] = []
        self._epochs: list[dict] = []
        self._progress: dict = {}
        self._events: dict[str, Progress] = {}  # the latest event of each phase
        self._latest: Progress | None = None
        self.started = time.time()

    def add_steps(self, rows: list[dict]) -> None:
        with self._lock:
            self._steps.extend(rows)

    def add_epoch(self, row: dict) -> None:
        with self._lock:
            self._epochs.append(row)

    def set_progress(self, **fields) -> None:
        """Live position: epoch, step, steps_per_epoch, images_per_second, eta_seconds..."""
        with self._lock:
            self._progress.update(fields)

    def progress(self) -> dict:
        with self._lock:
            return dict(self._progress)

    def publish(self, event: Progress) -> None:
        """The latest progress of a long step (decoding, extracting, epoch, step)."""
        with self._lock:
            self._events[event.phase] = event
            self._latest = event

    def progress_event(self, phase: str | None = None) -> Progress | None:
        """The latest event published (of ``phase``, if given); None before the first."""
        with self._lock:
            return self._latest if phase is None else self._events.get(phase)

    def snapshot(self, since_step: int = 0) -> dict[str, pd.DataFrame]:
        """Copies of the step and epoch tables (steps after ``since_step`` only, if given)."""
        with self._lock:
            steps = self._steps[since_step:] if since_step else list(self._steps)
            epochs = list(self._epochs)
        return {
            "steps": pd.DataFrame(steps, columns=STEP_COLUMNS),
            "epochs": pd.DataFrame(epochs, columns=EPOCH_COLUMNS),
        }

    def counts(self) -> tuple[int, int]:
        with self._lock:
            return len(self._steps), len(self._epochs)

    def load(self, steps: pd.DataFrame | None, epochs: pd.DataFrame | None) -> None:
        """Restore earlier rows (when resuming a run)."""
        with self._lock:
            if steps is not None:
                self._steps = steps.to_dict("records")
            if epochs is not None:
                self._epochs = epochs.to_dict("records")
