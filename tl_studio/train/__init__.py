"""The training engine: background jobs and the loop, one concern a module.

    jobs.py        a background thread per job, one running job per device, the registry
    loop.py        the Trainer, composing:
    inputs.py        batches from the feature cache, the device or the disk (and TrainData)
    phases.py        what trains when, and the optimizer groups
    epoch.py         one training epoch and one validation pass
    best.py          the best epoch and a copy of its weights
    checkpoint.py    writing the run folder as it trains, and resuming
    cache.py       the frozen-feature cache      extract.py   the folded frozen prefix
    schedule.py    learning-rate schedules       metrics.py   the metrics log other threads read
    config.py      TrainConfig                   errors.py    Stopped, NonFiniteLoss, TrainingFailed
    distributed.py under torchrun (from the CLI only): DDP, the ranks' shares, metrics summed over them
    rank_failures.py  naming the rank whose failure ends a torchrun run; the fault-injection test hook

The run folder's files belong to :mod:`tl_studio.runs`, the choice of
device to :mod:`tl_studio.devices`.
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Callable

from .. import devices
from ..plan import Plan
from ..progress import Progress
from .config import ConfigError, TrainConfig
from .errors import NonFiniteLoss, Stopped, TrainingFailed
from .inputs import TrainData, data_from_dataset
from .jobs import DONE, FAILED, FINISHED, QUEUED, REGISTRY, RUNNING, STOPPED, STOPPING, Job, JobNotFound, JobRegistry
from .loop import Trainer, TrainResult
from .metrics import MetricsLog

log = logging.getLogger(__name__)

__all__ = [
    "ConfigError",
    "DONE",
    "FAILED",
    "FINISHED",
    "QUEUED",
    "REGISTRY",
    "RUNNING",
    "STOPPED",
    "STOPPING",
    "Job",
    "JobNotFound",
    "JobRegistry",
    "MetricsLog",
    "NonFiniteLoss",
    "Stopped",
    "TrainConfig",
    "TrainData",
    "Trainer",
    "TrainingFailed",
    "TrainResult",
    "data_from_dataset",
    "start_job",
]


def start_job(
    plan: Plan,
    config: TrainConfig,
    data: TrainData | Callable[[Callable[[Progress], None]], TrainData],
    *,
    run_dir: str | Path | None = None,
    pretrained: bool = True,
    resume: bool = False,
    callbacks: list = (),
    registry: JobRegistry = REGISTRY,
    label: str = "",
    dist=None,
) -> Job:
    """Queue a training job on its device and return at once.

    ``data`` may be a function producing the data, so that decoding images
    happens in the job's thread rather than the caller's. A function of one
    argument gets the job's :class:`~tl_studio.progress.Progress` publisher,
    to pass on as ``data_from_dataset(..., publish=...)``: the decoding then
    shows in the job's progress.

    ``dist``: the CLI's :class:`~tl_studio.train.distributed.Dist` under
    torchrun (never the app's: its jobs are threads of one process); only
    rank 0 holds and writes the run folder.
    """
    from ..runtime import tune_allocator

    tune_allocator()
    dev = dist.device if dist is not None else devices.resolve(config.device)

    def work(job: Job) -> TrainResult:
        d = _produce(data, job.metrics.publish) if callable(data) else data
        trainer = Trainer(
            plan,
            config,
            d,
            run_dir=run_dir,
            pretrained=pretrained,
            stop_event=job.stop_event,
            metrics=job.metrics,
            callbacks=list(callbacks),
            resume=resume,
            dist=dist,
        )
        return trainer.fit()

    job = Job(work, devices.slot_key(dev), label=label or plan.model)
    job.run_dir = Path(run_dir) if run_dir and (dist is None or dist.main) else None
    job.plan, job.config = plan, config
    registry.submit(job)
    return job


def _produce(factory: Callable, publish: Callable[[Progress], None]) -> TrainData:
    """Call a data factory, with the publisher if it takes an argument (factories of none still work)."""
    try:
        takes_one = bool(inspect.signature(factory).parameters)
    except (TypeError, ValueError):  # no signature to read (some builtins): assume the documented form
        takes_one = True
    return factory(publish) if takes_one else factory()
