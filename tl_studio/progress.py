"""One progress event for every long step: decoding images, extracting features, epochs, steps.

    meter = Meter("decoding", total=len(paths), unit="images", publish=log.publish)
    meter.update(done)        # publishes Progress("decoding", done, total, "images", rate, eta)

The training engine publishes these through its metrics log
(:meth:`tl_studio.train.MetricsLog.progress_event`); the UI's status line
and the CLI's progress read them there. The strategy's measurements (decoding,
feature passes, the sweep's probes) take a ``publish`` callback of their own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

# The phases the training engine publishes.
DECODING = "decoding"  # images decoded to the model's input size (done/total: images)
EXTRACTING = "extracting"  # the frozen-feature cache being built (images)
EPOCH = "epoch"  # done: epochs completed, total: epochs planned
STEP = "step"  # training steps of the current epoch
PREDICTING = "predicting"  # images through a trained model (an evaluation)
PROBING = "probing"  # the freeze-depth sweep's linear probes (done/total: layers)
FITTING = "fitting"  # the head's cross-validation on the training split (done/total: fold paths of one table)
EXPORTING = "exporting"  # writing an exported model (done/total: files)


@dataclass(frozen=True)
class Progress:
    phase: str
    done: int
    total: int
    unit: str
    rate: float | None  # units per second so far in this phase; None before it can be measured
    eta: float | None  # seconds until done reaches total, at that rate

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total > 0 else 0.0


class Meter:
    """Counts toward a total and publishes a :class:`Progress` with rate and ETA at each update."""

    def __init__(self, phase: str, total: int, unit: str, publish: Callable[[Progress], None], *, start: int = 0):
        self.phase, self.total, self.unit, self.publish = phase, int(total), unit, publish
        self.start = int(start)  # done when the meter started (a resumed run's epochs)
        self.t0 = time.perf_counter()

    def update(self, done: int) -> Progress:
        elapsed = time.perf_counter() - self.t0
        counted = done - self.start
        rate = counted / elapsed if counted > 0 and elapsed > 0 else None
        eta = max(self.total - done, 0) / rate if rate else None
        event = Progress(self.phase, int(done), self.total, self.unit, rate, eta)
        self.publish(event)
        return event

    def fractions(self) -> Callable[[float, str], None]:
        """The meter as a ``(fraction, message)`` callback, for code that reports fractions."""
        return lambda fraction, message="": self.update(round(fraction * self.total))


def fold_ticks(publish: Callable[[Progress], None] | None, check_stop: Callable[[], None] | None = None):
    """A cross-validation's per-fold callback (``tl_studio.probe``'s ``tick(done, total)``): a place to stop,
    and the :data:`FITTING` event. Each table (the linear head's, the two-layer head's) counts from 0."""
    meter: Meter | None = None

    def tick(done: int, total: int) -> None:
        nonlocal meter
        if check_stop is not None:
            check_stop()
        if publish is None:
            return
        if meter is None or done == 0 or meter.total != total:
            meter = Meter(FITTING, total, "folds", publish, start=done)
        meter.update(done)

    return tick
