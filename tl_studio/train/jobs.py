"""Training jobs: a background thread each, one running job per compute device.

A :class:`Job` owns its thread, a stop event checked every batch, a metrics
log any thread may read, and a status. The process-wide :data:`REGISTRY`
keys jobs by an unguessable id: whoever holds the id can watch or stop the
job, nobody else can find it. Each device (each GPU, or the CPU) runs one job
at a time; the rest wait in order and can see their place in the queue.

A server runs for weeks, so a job lets go of what it no longer needs: once
done it drops its work function (and the decoded data it held), a job with a
run folder drops its weights (they are on disk; its summary and metrics
stay), and the process's freed memory goes back to the system. A job without
a run folder keeps its weights in ``job.result.state`` until
:meth:`Job.release`. The registry remembers the last :data:`KEEP_DONE` done
jobs.
"""

from __future__ import annotations

import collections
import gc
import logging
import secrets
import threading
import time
import traceback
from typing import Callable

import torch

from .. import runs
from ..runtime import release_memory
from .config import ConfigError
from .errors import NonFiniteLoss, Stopped, TrainingFailed
from ..errors import InputError
from .metrics import MetricsLog

log = logging.getLogger(__name__)

QUEUED, RUNNING, STOPPING, STOPPED, FINISHED, FAILED = (
    "queued",
    "running",
    "stopping",
    "stopped",
    "finished",
    "failed",
)
DONE = (STOPPED, FINISHED, FAILED)
KEEP_DONE = 64  # done jobs the registry remembers (their ids still poll); older ones are forgotten
# Failures whose message says it all (it names the file or the setting): logged without a traceback.
EXPECTED = (runs.RunError, ConfigError, NonFiniteLoss, TrainingFailed, OSError)


class JobNotFound(InputError, KeyError):
    pass


class Job:
    """One training run in the background.

    ``work`` is called in the job's thread as ``work(job)`` and returns the
    result (a TrainResult); it must check ``job.stop_event`` regularly.
    """

    def __init__(self, work: Callable[["Job"], object], device_key: str, label: str = ""):
        self.id = secrets.token_urlsafe(16)
        self.work = work
        self.device_key = device_key
        self.label = label
        self.metrics = MetricsLog()
        self.stop_event = threading.Event()
        self.status = QUEUED
        self.error: str | None = None
        self.result = None
        self.created = time.time()
        self.started: float | None = None
        self.finished: float | None = None
        self.run_dir = None
        # what the job trains: its own frozen values, for views such as a reloaded form
        self.plan = None
        self.config = None
        self._done = threading.Event()
        self._registry: "JobRegistry | None" = None
        self._release_run: Callable[[], None] | None = None

    # ---- control ------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the job to stop; it does so within one batch (or leaves the queue at once)."""
        self.stop_event.set()
        if self._registry is not None:
            self._registry._on_stop(self)

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def release(self) -> None:
        """Drop the weights a job without a run folder hands over (``result.state``)."""
        if self.result is not None and getattr(self.result, "state", None) is not None:
            self.result.state = None
            release_memory()

    @property
    def done(self) -> bool:
        return self.status in DONE

    # ---- reading ------------------------------------------------------------------
    def queue_position(self) -> int:
        """0 while running or finished; n >= 1 while n-1 jobs wait ahead of this one
        behind the running job."""
        return self._registry.queue_position(self) if self._registry else 0

    def snapshot(self) -> dict:
        progress = self.metrics.progress()
        return {
            "id": self.id,
            "label": self.label,
            "status": self.status,
            "error": self.error,
            "queue_position": self.queue_position(),
            "device": self.device_key,
            "run_dir": str(self.run_dir) if self.run_dir else None,
            "progress": progress,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
        }

    def _finish(self) -> None:
        """Done, whether it ran or left the queue: its run folder is no longer "running"."""
        if self._release_run is not None:
            self._release_run()
        if self.run_dir is not None and self.status in (FAILED, STOPPED):
            try:  # a folder made for the job that never wrote anything (a failure before the
                self.run_dir.rmdir()  # first file, a job stopped in the queue) is not left behind
            except OSError:  # not empty, or not there: it stays as it is
                pass
        self._done.set()

    # ---- the thread ---------------------------------------------------------------
    def _execute(self) -> None:
        try:
            self.result = self.work(self)
            self.status = STOPPED if self.stop_event.is_set() else FINISHED
            status = getattr(self.result, "status", None)
            if status == "stopped":
                self.status = STOPPED
        except Stopped:  # stopped where the work does not catch it itself (before its first epoch)
            self.status = STOPPED
        except BaseException as exc:  # a crash in a job never takes the process down
            self.status = FAILED
            self.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            # A user's mistake (bad data, NaN loss, weights not cached, a full disk) is one line; a bug keeps
            # its traceback.
            if isinstance(exc, (InputError, *EXPECTED)):
                log.error("job %s failed: %s", self.id[:8], self.error)
            else:
                log.error("job %s failed: %s\n%s", self.id[:8], self.error, traceback.format_exc())
        finally:
            self.finished = time.time()
            self.work = None  # its closure holds the job's data (decoded images)
            if self.run_dir is not None and getattr(self.result, "state", None) is not None:
                self.result.state = None  # on disk in the run folder
            # Release what the job held: its tensors die with `work`'s frame; then give
            # the freed memory back (see runtime.release_memory).
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            release_memory()


class JobRegistry:
    def __init__(self, keep_done: int = KEEP_DONE):
        self._lock = threading.Condition()
        self._jobs: dict[str, Job] = {}
        self._queues: dict[str, collections.deque[Job]] = collections.defaultdict(collections.deque)
        self.keep_done = keep_done

    def submit(self, job: Job) -> str:
        with self._lock:
            job._registry = self
            self._jobs[job.id] = job
            self._queues[job.device_key].append(job)
            self._trim()
        if job.run_dir is not None:
            # A queued job's run counts as running too: nobody may delete it from under the job.
            job._release_run = runs.hold(job.run_dir)
        threading.Thread(target=self._run, args=(job,), name=f"tl-job-{job.id[:8]}", daemon=True).start()
        return job.id

    def get(self, job_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise JobNotFound(f"no job with id {job_id!r} (it may belong to another workspace or have been removed)")
        return job

    def forget(self, job_id: str) -> None:
        """Drop a finished job from the registry (its run directory stays)."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None and job.done:
                del self._jobs[job_id]

    def _trim(self) -> None:
        """Forget the oldest done jobs beyond ``keep_done`` (call with the lock held)."""
        done = [j for j in self._jobs.values() if j.done]
        for job in sorted(done, key=lambda j: j.finished or j.created)[: max(0, len(done) - self.keep_done)]:
            del self._jobs[job.id]

    def __len__(self) -> int:
        with self._lock:
            return len(self._jobs)

    def active(self) -> list[Job]:
        """Jobs queued or running (for checks such as "is this run still training"),
        never for listing to users: who may see a job is decided by holding its id."""
        with self._lock:
            return [j for j in self._jobs.values() if not j.done]

    def queue_position(self, job: Job) -> int:
        with self._lock:
            q = self._queues.get(job.device_key)
            if not q or job not in q:
                return 0
            return list(q).index(job)

    def _on_stop(self, job: Job) -> None:
        with self._lock:
            if job.status == QUEUED:
                # Not started yet: leave the queue at once.
                q = self._queues[job.device_key]
                if job in q:
                    q.remove(job)
                job.status = STOPPED
                job.finished = time.time()
                job._finish()
                self._lock.notify_all()
            elif job.status == RUNNING:
                job.status = STOPPING

    def _run(self, job: Job) -> None:
        with self._lock:
            # Wait for our turn on this device: first in its queue.
            while job.status == QUEUED and self._queues[job.device_key][0] is not job:
                self._lock.wait()
            if job.status != QUEUED:  # stopped while waiting
                return
            job.status = STOPPING if job.stop_event.is_set() else RUNNING
            job.started = time.time()
        try:
            job._execute()
        finally:
            with self._lock:
                q = self._queues[job.device_key]
                if job in q:
                    q.remove(job)
                self._trim()
                self._lock.notify_all()
            job._finish()

    def wait_idle(self, timeout: float = 60) -> bool:
        """Wait until no job is queued or running (for tests and shutdown)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while any(self._queues.values()):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
        return True


REGISTRY = JobRegistry()
