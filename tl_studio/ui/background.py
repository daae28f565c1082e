"""Long work that is not training (the evidence pass, an evaluation, an ONNX export) as stoppable jobs.

A click starts the work as a job of the engine's registry, in a queue of its
own per workspace (``light:<workspace>``): it never waits behind a training,
and one workspace's measuring never blocks another's. The click returns at
once; a timer in the tab shows the job's progress and, when it ends, the
result, which the job itself has written into the workspace's session (so a
reload finds it). API clients call the same work synchronously: their
endpoint waits for the job and returns what it made.
"""

from __future__ import annotations

import logging
from typing import Callable

from .. import train
from ..progress import Progress
from ..train.errors import Stopped

log = logging.getLogger(__name__)

LIGHT = "light"


def queue_key(ws) -> str:
    return f"{LIGHT}:{ws.id}"


def current(ws, kind: str) -> train.Job | None:
    job_id = ws.cache.get(f"job:{kind}")
    if not job_id:
        return None
    try:
        return train.REGISTRY.get(job_id)
    except train.JobNotFound:
        return None


def start(ws, kind: str, work: Callable[[Callable[[Progress], None], Callable[[], None]], object]) -> train.Job:
    """Start ``work(publish, check_stop)`` as this workspace's ``kind`` job; refuse a second one at once."""
    from .context import fail

    running = current(ws, kind)
    if running is not None and not running.done:
        raise fail(f"The {kind} already running in this workspace is not finished; stop it or wait for it")

    def run(job: train.Job):
        def check_stop():
            if job.stop_event.is_set():
                raise Stopped()

        try:
            return work(job.metrics.publish, check_stop)
        except Stopped:
            log.info("%s stopped", kind)
            return None

    job = train.Job(run, queue_key(ws), label=kind)
    train.REGISTRY.submit(job)
    ws.cache[f"job:{kind}"] = job.id
    return job


def status_text(job: train.Job | None, kind: str) -> str:
    """One line: where the job is (phase, done of total, rate, ETA), or how it ended."""
    if job is None:
        return ""
    if job.status == train.QUEUED:
        return f"**{kind.capitalize()}: queued**"
    if job.status in (train.RUNNING, train.STOPPING):
        event = job.metrics.progress_event()
        word = "stopping" if job.status == train.STOPPING else "running"
        if event is None:
            return f"**{kind.capitalize()}: {word}…**"
        rate = f" · {event.rate:.0f} {event.unit}/s" if event.rate else ""
        eta = f" · about {event.eta:.0f} s left" if event.eta is not None else ""
        return f"**{kind.capitalize()}: {word}** · {event.phase} {event.done}/{event.total} {event.unit}{rate}{eta}"
    if job.status == train.FAILED:
        return f"**{kind.capitalize()} failed:** {job.error}"
    if job.status == train.STOPPED or job.result is None:
        return f"**{kind.capitalize()} stopped**: nothing changed."
    return ""
