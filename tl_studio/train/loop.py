"""The :class:`Trainer`: one training run, composed of the parts around it.

    inputs.py      batches: the feature cache, images on the device, or streamed from disk
    phases.py      what trains when (head warm-up, the plan, unfreezing) and the optimizer groups
    epoch.py       one training epoch and one validation pass, with their metrics
    best.py        the best epoch and a copy of its weights
    checkpoint.py  the run folder: config, tables, weights, last.pt; resuming

Once its epochs have begun, ``fit`` ends in one of three ways: finished (all
epochs, or early stopping), stopped (the stop event, raised as
:class:`Stopped` at the top of a batch and caught here) or failed (any other
exception, which propagates). With a run folder, each leaves the best
validated weights so far, the metrics tables and a ``summary.json`` that
says which (a failure also says why). A failure before the first epoch (the
model cannot be built, last.pt does not fit) leaves the folder as it was.
"""

from __future__ import annotations

import contextlib
import logging
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .. import devices, runs
from ..plan import Plan
from ..progress import EPOCH, Meter
from ..surgery import TransferModel, build_model
from . import epoch as one_pass
from . import convex, distributed, phases
from .best import Best, Snapshots
from .checkpoint import Checkpoints
from .config import TrainConfig
from .errors import NonFiniteLoss, Stopped, TrainingFailed
from .inputs import Inputs, TrainData
from .metrics import MetricsLog

log = logging.getLogger(__name__)

__all__ = ["NonFiniteLoss", "Stopped", "TrainData", "Trainer", "TrainingFailed", "TrainResult"]


@dataclass
class TrainResult:
    status: str  # finished | stopped (a failure raises)
    best_epoch: int | None
    best_val_accuracy: float | None
    validated: bool  # False: stopped before any validation, the last weights are handed over
    epochs_run: int
    train_seconds: float
    images_per_second: float
    device: str
    state: dict[str, torch.Tensor]  # the weights handed over (best, else last)
    cached: bool
    batch_size: int
    summary: dict = field(default_factory=dict)


class Trainer:
    def __init__(
        self,
        plan: Plan,
        config: TrainConfig,
        data: TrainData,
        *,
        run_dir: str | Path | None = None,
        pretrained: bool = True,
        stop_event=None,
        metrics: MetricsLog | None = None,
        callbacks: list[Callable] = (),
        resume: bool = False,
        dist: distributed.Dist | None = None,  # under torchrun (from the CLI only): this process's rank
    ):
        if plan.head.num_classes != len(data.classes):
            raise TrainingFailed(
                f"the plan's head has {plan.head.num_classes} classes but the dataset has "
                f"{len(data.classes)} ({', '.join(data.classes)})"
            )
        if not data.train_idx:
            raise TrainingFailed("the dataset has no training images")
        self.plan, self.cfg, self.data = plan, config, data
        self.run_dir = Path(run_dir) if run_dir else None
        self.pretrained = pretrained
        self.stop_event = stop_event
        self.metrics = metrics or MetricsLog()
        # Callbacks get (trainer, event, info) at "batch" and "epoch"; they may raise.
        self.callbacks = list(callbacks)
        self.resume, self.dist = resume, dist
        self.device = dist.device if dist is not None else devices.resolve(config.device)
        self.batch_size = config.batch_size
        self.model: TransferModel | None = None
        self.inputs: Inputs | None = None
        self.checkpoints = (
            Checkpoints(self.run_dir, plan, data.classes, save_last=config.save_last, pretrained=pretrained,
                        writes=dist is None or dist.main)
            if self.run_dir else None
        )
        self.best = Best()
        self.step = 0
        self.convex = False  # the head is fitted to convergence instead of trained for epochs
        self.head_fit: dict | None = None  # what that fit (or the fitted starting head) chose

    # ---- set-up -------------------------------------------------------------------------
    def build(self) -> None:
        """The model, the inputs and the loss on the device, as ``fit`` starts them."""
        from ..data import Augment, class_weights

        cfg, dev = self.cfg, self.device
        torch.manual_seed(cfg.seed)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        model = build_model(self.plan, pretrained=self.pretrained, class_names=self.data.classes)
        self.channels_last = cfg.channels_last if cfg.channels_last is not None else dev.type == "cuda"
        model = model.to(dev)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.snapshots = Snapshots(model)
        self.amp_dtype = devices.amp_dtype(dev) if cfg.amp else None
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.inputs = Inputs(
            self.data,
            self.plan.model,
            dev,
            augment=Augment.from_preset(cfg.augment),
            channels_last=self.channels_last,
            fold_frozen=cfg.fold_frozen,
            autocast=self.autocast,
            check_stop=self.check_stop,
            publish=self.metrics.publish,
            dist=self.dist,
        )
        weight = None
        if cfg.balance == "weights":
            train_labels = self.data.labels[self.data.train_idx]
            weight = class_weights(train_labels, len(self.data.classes)).to(dev)
        self.criterion = nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)
        self.val_criterion = nn.CrossEntropyLoss()
        self.optimizer = None
        self.phase = None

    def autocast(self):
        return devices.autocast(self.device, self.amp_dtype)

    def check_stop(self) -> None:
        # Under torchrun ranks stop together, at a training step (distributed.window), never alone.
        if self.dist is None and self.stop_event is not None and self.stop_event.is_set():
            raise Stopped()

    def enter_phase(self, phase: str) -> None:
        """Set what trains; the frozen prefix, its cache and the weight copies follow."""
        if phase == self.phase:
            return
        self.optimizer = phases.enter(self.model, self.optimizer, phase, self.plan, self.cfg)
        self.phase = phase
        self.inputs.set_prefix(self.model, self.model.frozen_prefix())
        distributed.enter_phase(self)
        self.snapshots.split()

    def start_phase(self, epoch: int) -> None:
        """The phase of ``epoch`` (0-based), entered if it is a new one."""
        self.enter_phase(phases.phase_for(self.plan, epoch))

    # ---- one epoch ---------------------------------------------------------------------
    def train_epoch(self, epoch: int, total_steps: int, warmup: int) -> dict:
        return one_pass.train_epoch(self, epoch, total_steps, warmup)

    def evaluate(self) -> dict:
        return one_pass.validate(self)

    # ---- the whole run -------------------------------------------------------------------
    def fit(self) -> TrainResult:
        with distributed.failures(self.dist):  # under torchrun: the failure named, the rank's or a peer's
            self.build()
            # While this runs, runs.status() of the folder is "running". Under torchrun only rank 0 writes it.
            with runs.writing(self.run_dir) if self.run_dir and self.checkpoints.writes else contextlib.nullcontext():
                return self._fit()

    def _fit(self) -> TrainResult:
        cfg, ck = self.cfg, self.checkpoints
        if convex.applies(self.plan, cfg):
            return self._fit_convex()
        start = 0
        if ck is not None:
            ck.make_folder()
            if self.resume:
                start = ck.resume(self)
            else:
                ck.write_config(cfg, self.data, self.device)
        t_start = time.perf_counter()
        epochs_meter = Meter(EPOCH, cfg.epochs, "epochs", self.metrics.publish, start=start)
        epochs_run, bad_epochs, status = start, 0, runs.FINISHED
        rates: list[float] = []
        used_cache = False
        ended = False
        failure: Exception | None = None
        try:
            # Inside the try: a stop during the head's fit (its feature pass) is a stop, not a failure.
            if start == 0 and convex.lp_init_applies(self.plan, cfg):
                self.head_fit = convex.fit_first(self)
            epoch = start
            while epoch < cfg.epochs:
                epochs_meter.update(epoch)
                self.start_phase(epoch)
                self.inputs.build_cache(cfg, self.batch_size)
                used_cache = used_cache or self.inputs.cache is not None
                n_steps = len(distributed.split_epoch(torch.arange(len(self.data.train_idx)), self.batch_size,
                                                      self.dist)[2])  # as the epoch counts them
                total = self.step + (cfg.epochs - epoch) * n_steps
                warmup = int(cfg.warmup_epochs * n_steps)
                try:
                    row = self.train_epoch(epoch, total, warmup)
                except torch.cuda.OutOfMemoryError:
                    self._halve_batch()
                    continue  # retry this epoch with the smaller batch
                row.update(self.evaluate())
                epochs_run = epoch + 1
                rates.append(row["images_per_second"])
                self.metrics.add_epoch(
                    {
                        "epoch": epoch + 1,
                        "phase": self.phase,
                        **row,
                        "lr": phases.head_group(self.optimizer)["lr"],
                        "elapsed": time.time() - self.metrics.started,
                        "cached": self.inputs.cache is not None,
                    }
                )
                if self.best.improves(row["val_accuracy"], row["val_loss"]):
                    self.best.take(epoch + 1, row["val_accuracy"], row["val_loss"], self.snapshots.take())
                stop_early = False
                if cfg.early_stopping:
                    best_loss = min(self.metrics.snapshot()["epochs"]["val_loss"].tolist()[:-1], default=math.inf)
                    bad_epochs = 0 if row["val_loss"] < best_loss else bad_epochs + 1
                    stop_early = bad_epochs >= cfg.early_stopping
                if ck is not None:
                    always = epoch == start or epoch == cfg.epochs - 1 or stop_early or self._stop_requested()
                    if ck.due(force=always):
                        ck.save(self.metrics.snapshot(), self.best, self._last_checkpoint(epoch))
                for cb in self.callbacks:
                    cb(self, "epoch", {"epoch": epoch, **row})
                if stop_early:
                    log.info("early stopping: no better validation loss for %d epochs", bad_epochs)
                    break
                epoch += 1
            ended = True
        except Stopped:
            status = runs.STOPPED
            ended = True
            log.info("stopped at epoch %d, step %d", epochs_run + 1, self.step)
        except Exception as exc:
            failure = exc
            raise
        finally:
            # Whatever ends the run (a stop, a crash, a non-finite loss), the best
            # weights validated so far reach the disk, and after a crash the tables
            # too, with a summary that says it failed and why (otherwise they are
            # written below).
            if ck is not None and failure is not None:
                ips = statistics.median_high(rates) if rates else 0.0
                seconds = time.perf_counter() - t_start
                summary = self._summary(runs.FAILED, epochs_run, seconds, ips, used_cache)
                summary["error"] = distributed.describe_failure(self.dist, failure)
                ck.save_failed(self.best, self.metrics.snapshot(), summary)
            elif ck is not None:
                ck.save_best(self.best)
                if not ended:
                    ck.finish(self.metrics.snapshot(), None)
        train_seconds = time.perf_counter() - t_start
        state = self.best.state if self.best.validated else self.snapshots.take()
        if not self.best.validated and ck is not None:
            ck.save_unvalidated(state)
        images_per_second = statistics.median_high(rates) if rates else 0.0
        summary = self._summary(status, epochs_run, train_seconds, images_per_second, used_cache)
        result = TrainResult(status=status, best_epoch=self.best.epoch, best_val_accuracy=self.best.val_accuracy,
                             validated=self.best.validated, epochs_run=epochs_run, train_seconds=train_seconds,
                             images_per_second=images_per_second, device=summary["device"], state=state,
                             cached=used_cache, batch_size=self.batch_size, summary=summary)
        if ck is not None:
            ck.finish(self.metrics.snapshot(), summary)
        return result

    # ---- heads fitted to convergence (convex.py) ----------------------------------------------
    def _fit_convex(self) -> TrainResult:
        """Nothing in the body trains: fit the head to convergence on the frozen features; no epochs."""
        cfg, ck = self.cfg, self.checkpoints
        if ck is not None:
            ck.make_folder()
            ck.write_config(cfg, self.data, self.device)
        log.info("the body is frozen: the head is fitted to convergence on its features (L-BFGS, L2 by "
                 "cross-validation on the training split); epochs (%d) are not used (--head-solver sgd "
                 "trains the head for epochs instead)", cfg.epochs)
        t_start = time.perf_counter()
        self.convex = True
        self.enter_phase(phases.PLAN)
        status, epochs_run = runs.FINISHED, 0
        try:
            x, fs = convex.head_inputs(self)
            self.head_fit = convex.fit_head(self, x, fs)
            train_loss, train_acc = convex.score(self.model, x, self.data.train_idx, self.data.labels)
            val_loss, val_acc = convex.score(self.model, x, self.data.val_idx, self.data.labels)
            seconds = time.perf_counter() - t_start
            epochs_run = 1
            self.metrics.add_epoch({
                "epoch": 1, "phase": "convex", "train_loss": train_loss, "train_accuracy": train_acc,
                "images_per_second": len(self.data.labels) / max(seconds, 1e-9), "val_loss": val_loss,
                "val_accuracy": val_acc, "lr": float("nan"), "elapsed": time.time() - self.metrics.started,
                "cached": True,
            })
            if self.best.improves(val_acc, val_loss):
                self.best.take(1, val_acc, val_loss, self.snapshots.take())
        except Stopped:
            status = runs.STOPPED
            log.info("stopped before the head was fitted")
        seconds = time.perf_counter() - t_start
        state = self.best.state if self.best.validated else self.snapshots.take()
        if ck is not None:
            ck.save(self.metrics.snapshot(), self.best, None)
            if not self.best.validated:
                ck.save_unvalidated(state)
        summary = self._summary(status, epochs_run, seconds, len(self.data.labels) / max(seconds, 1e-9), True)
        result = TrainResult(status=status, best_epoch=self.best.epoch, best_val_accuracy=self.best.val_accuracy,
                             validated=self.best.validated, epochs_run=epochs_run, train_seconds=seconds,
                             images_per_second=summary["images_per_second"], device=summary["device"],
                             state=state, cached=True, batch_size=self.batch_size, summary=summary)
        if ck is not None:
            ck.finish(self.metrics.snapshot(), summary)
        return result

    def _stop_requested(self) -> bool:
        return self.stop_event is not None and self.stop_event.is_set()

    def _last_checkpoint(self, epoch: int) -> dict:
        """last.pt: everything a resume needs to continue after ``epoch`` exactly."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": epoch,
            "step": self.step,
            "batch_size": self.batch_size,
            "phase": self.phase,
            "best": self.best.numbers(),
            "rng": torch.get_rng_state(),
            "gen": self.gen.get_state(),
        }

    def _halve_batch(self) -> None:
        if self.dist is not None:  # one rank cannot retry with a smaller batch alone
            raise TrainingFailed(f"CUDA out of memory at batch size {self.batch_size} on rank {self.dist.rank}; "
                                 "under torchrun the batch is not halved: lower --batch-size")
        if self.batch_size // 2 < self.cfg.min_batch_size:
            raise TrainingFailed(
                f"CUDA out of memory even at batch size {self.batch_size} (floor "
                f"{self.cfg.min_batch_size}); choose a smaller model, freeze more layers or lower the resolution"
            )
        self.optimizer.zero_grad(set_to_none=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        self.batch_size //= 2
        log.warning("CUDA out of memory: retrying the epoch with batch size %d", self.batch_size)

    def _summary(self, status: str, epochs_run: int, seconds: float, images_per_second: float, cached: bool) -> dict:
        fit, convex_run = self.head_fit, self.convex
        return {
            "status": status,
            "model": self.plan.model,
            # The model actually saved: the fitted head, or the best epoch's weights.
            "val_accuracy": self.best.val_accuracy,
            # A fitted head is chosen on training folds only; the best epoch is chosen on the validation split.
            "solver": convex.SOLVER if convex_run else self.cfg.optimizer,
            "l2": fit["l2"] if fit is not None else None,
            "head_init": "fitted" if fit is not None and not convex_run else None,
            # The training images the fitted head (or starting head) was fitted on: all of them, or the
            # evidence's sample past the small-data bound (features/sample.py).
            "head_rows": fit["head_rows"] if fit is not None else None,
            "selected_on": "train-cv" if convex_run else "validation",
            "best_val_accuracy": self.best.val_accuracy,
            "best_epoch": self.best.epoch,
            "epochs_run": epochs_run,
            "epochs_planned": self.cfg.epochs,
            "validated": self.best.validated,
            "train_seconds": round(seconds, 3),
            "images_per_second": round(images_per_second, 2),
            "device": devices.describe(self.device),
            "batch_size": self.batch_size,
            "world_size": self.dist.world_size if self.dist is not None else 1,
            "feature_cache": cached,
            "classes": self.data.classes,
            "parameters": self.model.parameter_counts() if self.model is not None else {},
        }
