"""The training engine: background jobs, the loop, the feature cache, run directories."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import torch

from ..plan import Plan
from . import devices
from .config import ConfigError, TrainConfig
from .jobs import DONE, FAILED, FINISHED, QUEUED, REGISTRY, RUNNING, STOPPED, STOPPING, Job, JobNotFound, JobRegistry
from .loop import NonFiniteLoss, Stopped, TrainData, Trainer, TrainingFailed, TrainResult
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


def data_from_dataset(dataset, model_name: str, *, memory_budget_mb: int = 2048, progress=None) -> TrainData:
    """Decode a :class:`tl_studio.data.Dataset` once for a model's input size."""
    from ..data import ImageStore
    from ..registry import get_spec

    spec = get_spec(model_name)
    store = ImageStore(
        dataset.paths,
        spec.preprocess,
        memory_budget_bytes=memory_budget_mb * 2**20,
        progress=progress,
    )
    labels = torch.tensor(dataset.labels, dtype=torch.long)
    info = {"root": str(dataset.root), "fingerprint": dataset.fingerprint, **dataset.file_lists()}
    return TrainData(store, labels, list(dataset.train_idx), list(dataset.val_idx), list(dataset.classes), info)


def start_job(
    plan: Plan,
    config: TrainConfig,
    data: TrainData | Callable[[], TrainData],
    *,
    run_dir: str | Path | None = None,
    pretrained: bool = True,
    resume: bool = False,
    callbacks: list = (),
    registry: JobRegistry = REGISTRY,
    label: str = "",
) -> Job:
    """Queue a training job on its device and return at once.

    ``data`` may be a function producing the data, so that decoding images
    happens in the job's thread rather than the caller's.
    """
    from ..runtime import tune_allocator

    tune_allocator()
    dev = devices.resolve(config.device)

    def work(job: Job) -> TrainResult:
        d = data() if callable(data) else data
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
        )
        return trainer.fit()

    job = Job(work, devices.slot_key(dev), label=label or plan.model)
    job.run_dir = Path(run_dir) if run_dir else None
    job.plan, job.config = plan, config
    registry.submit(job)
    return job
