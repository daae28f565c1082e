"""Progress of long steps on stderr, from the one :class:`~tl_studio.progress.Progress` event.

    with ProgressView() as view:
        measure_dataset(model, ds, publish=view)     # the engine calls view(event)
        follow_job(job, view)                        # a training job, polled

On a terminal each phase (decoding, extracting, training, probing, exporting)
is a tqdm bar that moves with every event, and log lines are written above
the bars. Elsewhere (a pipe, a log file) a phase prints one plain line when it
starts, then at most one every few seconds, and one when it completes; the
same text is never printed twice. stdout is left to the results.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
import time

from ..progress import DECODING, EPOCH, EXPORTING, EXTRACTING, FITTING, PROBING, STEP, Meter, Progress

LINE_SECONDS = 5.0  # a pipe gets at most one line per phase this often
TRAINING = "training"  # the CLI's own phase: every step of every epoch, as one bar

WORDS = {
    DECODING: "decoding images",
    EXTRACTING: "extracting features",
    TRAINING: "training",
    PROBING: "sweep: probing layers",
    FITTING: "fitting the head (cross-validation)",
    EXPORTING: "exporting",
}


def describe(event: Progress, note: str = "") -> str:
    """One line for a pipe: "decoding images: 120/200 images (60%), 85 images/s, 1s left"."""
    text = f"{WORDS.get(event.phase, event.phase)}: {event.done}/{event.total} {event.unit}"
    if event.total > 0:
        text += f" ({event.fraction:.0%})"
    if event.rate:
        text += f", {_rate(event.rate)} {event.unit}/s"
    if event.eta is not None and event.done < event.total:
        text += f", {event.eta:.0f}s left"
    return f"{text}; {note}" if note else text


def _rate(rate: float) -> str:
    return f"{rate:.0f}" if rate >= 100 else f"{rate:.1f}" if rate >= 10 else f"{rate:.2f}"


def _other_rank() -> bool:
    """A torchrun worker other than rank 0 (read from the environment: this module imports no torch)."""
    env = os.environ
    return "LOCAL_RANK" in env and env.get("RANK", "0") != "0" and env.get("WORLD_SIZE", "1") != "1"


class ProgressView:
    """Shows :class:`Progress` events on a stream (stderr). Call it with each event; thread-safe."""

    def __init__(self, stream=None, *, tty: bool | None = None, interval: float = LINE_SECONDS):
        if stream is None and _other_rank():  # under torchrun only rank 0 shows progress
            stream = open(os.devnull, "w")
        self.stream = stream if stream is not None else sys.stderr
        self.tty = _isatty(self.stream) if tty is None else tty
        self.interval = interval
        self._lock = threading.Lock()
        self._bar = None
        self._phase: str | None = None
        self._last_text: str | None = None
        self._last_at = -math.inf
        self._completed: str | None = None  # the phase whose completion line was printed
        self._exit = contextlib.ExitStack()

    def __enter__(self) -> "ProgressView":
        if self.tty:
            from tqdm.contrib.logging import logging_redirect_tqdm

            # Log lines go above the bars instead of through them.
            self._exit.enter_context(logging_redirect_tqdm())
        return self

    def __exit__(self, *exc) -> None:
        self.close()
        self._exit.close()

    def __call__(self, event: Progress, note: str = "") -> None:
        with self._lock:
            if self.tty:
                self._draw(event, note)
            else:
                self._line(event, note)

    def message(self, text: str) -> None:
        """A line that is not a count (a queue position, a stage starting), printed once."""
        with self._lock:
            if text == self._last_text:
                return
            self._last_text = text
            if self._bar is not None:
                self._bar.write(text, file=self.stream)
            else:
                self.stream.write(text + "\n")
                self.stream.flush()

    def close(self) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None

    # ---- a pipe: plain lines --------------------------------------------------------
    def _line(self, event: Progress, note: str) -> None:
        now = time.monotonic()
        complete = event.total > 0 and event.done >= event.total
        if self._completed == event.phase:
            if complete:
                return  # its last line is out already (later events differ only in the rate)
            self._completed = None  # the phase runs again (a second feature pass)
        new_phase = event.phase != self._phase
        if not (new_phase or complete or now - self._last_at >= self.interval):
            return
        text = describe(event, note)
        if text == self._last_text:
            return
        self._phase, self._last_text, self._last_at = event.phase, text, now
        if complete:
            self._completed = event.phase
        self.stream.write(text + "\n")
        self.stream.flush()

    # ---- a terminal: one tqdm bar per phase -----------------------------------------
    def _draw(self, event: Progress, note: str) -> None:
        from tqdm import tqdm

        # A new phase, or the same phase again from the start (the sweep's feature pass after the
        # similarity's): a new bar.
        if event.phase != self._phase or self._bar is None or event.done < self._bar.n:
            if self._bar is not None:
                # Phases run one after another: a new one means the last ended, even if its final
                # event came between two polls.
                if self._bar.total:
                    self._bar.update(self._bar.total - self._bar.n)
                self._bar.close()
            self._phase = event.phase
            # A terminal that reports no size (some CI ptys) would hide the bar: assume 100x40 there.
            sized = _terminal_columns(self.stream) > 0
            self._bar = tqdm(
                total=event.total or None, desc=WORDS.get(event.phase, event.phase), unit=f" {event.unit}",
                file=self.stream, dynamic_ncols=sized, ncols=None if sized else 100, nrows=None if sized else 40,
                leave=True, mininterval=0.1,
            )
        bar = self._bar
        if event.total and bar.total != event.total:
            bar.total = event.total  # the batch was halved: more steps
        if note:
            bar.set_postfix_str(note, refresh=False)
        bar.update(event.done - bar.n)  # tqdm measures the rate from these updates


def _terminal_columns(stream) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):
        return 0


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class JobProgress:
    """A training job's progress as events: decoding and extracting as published, then the
    steps of every epoch as one "training" event, so a bar moves with each step."""

    def __init__(self, job):
        self.metrics = job.metrics
        self._meter: Meter | None = None
        self._epochs_seen = 0
        self._note = ""

    def current(self) -> tuple[Progress | None, str]:
        """(the latest event, a note such as "epoch 2/5, val acc 0.812") or (None, "") before any."""
        latest = self.metrics.progress_event()
        if latest is None or latest.phase not in (EPOCH, STEP):
            return latest, ""
        epoch, step = self.metrics.progress_event(EPOCH), self.metrics.progress_event(STEP)
        if epoch is None or step is None:
            return None, ""
        # An epoch publishes when it starts, then each of its steps: unless a step came last,
        # the step event on record is the previous epoch's.
        steps_done = step.done if latest is step else 0
        per_epoch = step.total
        total = epoch.total * per_epoch
        done = min(epoch.done * per_epoch + steps_done, total)
        if self._meter is None or self._meter.total != total:
            # The rate counts the steps seen from here (not a resumed run's, nor those before the first poll).
            self._meter = Meter(TRAINING, total, "steps", lambda e: None, start=done)
        event = self._meter.update(done)
        return event, self._describe_epoch(epoch)

    def _describe_epoch(self, epoch: Progress) -> str:
        _, n_epochs = self.metrics.counts()
        if n_epochs != self._epochs_seen:  # read the table only when an epoch was added
            self._epochs_seen = n_epochs
            last = self.metrics.snapshot()["epochs"].iloc[-1]
            self._note = (f"; epoch {int(last['epoch'])}: val acc {last['val_accuracy']:.3f}, "
                          f"val loss {last['val_loss']:.3f}")
        now = min(epoch.done + 1, epoch.total)
        return f"epoch {now}/{epoch.total}{self._note}"


def follow_job(job, view: ProgressView, *, poll: float | None = None) -> None:
    """Show a job's progress until it ends (Ctrl-C asks it to stop, then waits for it)."""
    poll = poll if poll is not None else (0.2 if view.tty else 1.0)
    progress = JobProgress(job)
    try:
        while not job.wait(poll):
            _show_job(job, progress, view)
    except KeyboardInterrupt:
        view.message("stopping at the end of this batch…")
        job.stop()
        job.wait()
    _show_job(job, progress, view)


def _show_job(job, progress: JobProgress, view: ProgressView) -> None:
    event, note = progress.current()
    if event is not None:
        view(event, note)
    elif job.status == "queued":
        view.message(f"queued: position {job.queue_position()} for {job.device_key}")
