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


class Failure:
    """What a job ended with when the user's input was the problem: one message, no traceback."""

    def __init__(self, message: str):
        self.message = message


def queue_key(ws) -> str:
    return f"{LIGHT}:{ws.id}"


def result(job: train.Job | None):
    """The job's result when it finished with one (not stopped, failed, or refused with a message)."""
    if job is None or not job.done or isinstance(job.result, Failure):
        return None
    return job.result


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
    from .context import UserError, fail

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
        except UserError as exc:
            log.info("%s: %s", kind, exc)
            return Failure(str(exc))

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
    if isinstance(job.result, Failure):
        return f"**{kind.capitalize()}:** {job.result.message}"
    if job.status == train.STOPPED or job.result is None:
        return f"**{kind.capitalize()} stopped**: nothing changed."
    return ""


def run_for_caller(ws, kind: str, work, render: Callable[[object], tuple], outputs: int):
    """Start ``work`` as a job. An API client waits for it and gets ``render(result)``, what the endpoint
    returned before it was a job; the page gets its outputs unchanged at once, and a timer renders later."""
    import gradio as gr

    from .context import fail, from_api_client

    job = start(ws, kind, work)
    if from_api_client():
        job.wait()
        if job.result is None or isinstance(job.result, Failure):
            raise fail(status_text(job, kind).replace("**", "") or f"the {kind} did not finish")
        return render(job.result)
    return gr.skip() if outputs == 1 else tuple(gr.skip() for _ in range(outputs))


def stop(ws, kind: str) -> str:
    """Ask the workspace's ``kind`` job to stop; the status line that says so (a user error if none runs)."""
    from .context import fail

    job = current(ws, kind)
    if job is None or job.done:
        raise fail(f"There is no {kind} running in this workspace to stop")
    job.stop()
    return status_text(job, kind)


def followed(ws, kind: str) -> tuple:
    """The status line and the polling timer's state just after a click started the ``kind`` job."""
    import gradio as gr

    job = current(ws, kind)
    return status_text(job, kind), gr.Timer(active=job is not None and not job.done)
