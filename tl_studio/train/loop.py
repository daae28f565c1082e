"""The training loop: plain functions around one :class:`Trainer`.

Design points, each measured or tested:

* Images live on the training device as uint8 (decoded once); conversion,
  augmentation and normalisation run there as batched tensor ops.
* Losses and correct counts accumulate on the device and are copied off every
  ``sync_every`` steps, never with an ``.item()`` per step.
* Stopping is an exception (:class:`Stopped`) raised at the top of a batch
  when the stop event is set, and caught in one place.
* When a frozen prefix exists and no random augmentation passes through it,
  the feature cache replaces the prefix (cache.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..plan import Plan
from ..registry import get_spec
from ..surgery import TransferModel, build_model
from . import devices, rundir
from .cache import FeatureCache
from .extract import FrozenPrefix
from .config import TrainConfig
from .metrics import MetricsLog
from .schedule import lr_factor

log = logging.getLogger(__name__)

# Checkpoints (the metrics tables, the best weights and last.pt, each model
# file a full copy, all written atomically with fsync) go to disk at most this
# often, and always after the first and the last epoch and when a stop is
# asked for; the tables are written again when the run ends, however it ends. With the
# feature cache an epoch can take milliseconds while a checkpoint takes
# ~0.15 s on a small CPU: writing one per epoch made ten cached epochs cost
# as much as the extraction they follow (bench/, figure 4). A crash loses at
# most this much training.
CHECKPOINT_SECONDS = 5.0


class Stopped(Exception):
    """The user asked to stop; caught once, in :meth:`Trainer.fit`."""


class NonFiniteLoss(RuntimeError):
    pass


class TrainingFailed(RuntimeError):
    pass


@dataclass
class TrainData:
    """What the loop needs from a dataset: decoded images, labels and the split."""

    images: object  # tl_studio.data.ImageStore (in memory: .tensor is uint8 N,3,S,S)
    labels: torch.Tensor  # (N,) int64
    train_idx: list[int]
    val_idx: list[int]
    classes: list[str]
    # provenance for config.json: fingerprint, root, (rel path, class) lists
    info: dict = field(default_factory=dict)


@dataclass
class TrainResult:
    status: str  # finished | stopped
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


def _accuracy_count(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (logits.argmax(1) == y).sum()


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
        self.resume = resume
        self.device = devices.resolve(config.device)
        self.batch_size = config.batch_size
        self.model: TransferModel | None = None
        self.cache: FeatureCache | None = None
        self.step = 0

    # ---- set-up -------------------------------------------------------------------
    def _build(self):
        cfg, dev = self.cfg, self.device
        torch.manual_seed(cfg.seed)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        model = build_model(self.plan, pretrained=self.pretrained, class_names=self.data.classes)
        self.channels_last = cfg.channels_last if cfg.channels_last is not None else dev.type == "cuda"
        model = model.to(dev)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        spec = get_spec(self.plan.model)
        p = spec.preprocess
        self.mean = torch.tensor(p.mean, device=dev).view(1, 3, 1, 1)
        self.std = torch.tensor(p.std, device=dev).view(1, 3, 1, 1)
        self.labels = self.data.labels.to(dev)
        tensor = getattr(self.data.images, "tensor", None)
        self.images = tensor.to(dev) if tensor is not None else None
        from ..data import Augment, class_weights

        self.augment = Augment.from_preset(cfg.augment)
        weight = None
        if cfg.balance == "weights":
            train_labels = self.data.labels[self.data.train_idx]
            weight = class_weights(train_labels, len(self.data.classes)).to(dev)
        self.criterion = nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)
        self.val_criterion = nn.CrossEntropyLoss()
        self.amp_dtype = devices.amp_dtype(dev) if cfg.amp else None
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.optimizer = None
        self.phase = None
        self._fast = None
        self._frozen_k = 0

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _phase_for(self, epoch: int) -> str:
        p = self.plan
        if p.unfreeze_all_at is not None and epoch >= p.unfreeze_all_at:
            return "all"
        if epoch < p.head_warmup_epochs:
            return "head"
        return "plan"

    def _enter_phase(self, phase: str):
        """Set what trains; newly trainable layers join the optimizer as new groups.

        Forgetting to add newly unfrozen parameters to the optimizer is a
        classic bug (Lightning's BaseFinetuning); here they join at their
        discriminative learning rates, and the state of existing groups (Adam
        moments of the head) is kept.
        """
        if phase == self.phase:
            return
        model, cfg = self.model, self.cfg
        model.apply_plan(phase)
        ratio = self.plan.body_lr_ratio
        if phase == "all":
            ratio = min(ratio, 0.1)  # "sometimes it pays" to train all: gently
        groups = model.param_groups(cfg.lr, cfg.weight_decay, ratio)
        if self.optimizer is None:
            for g in groups:
                g["initial_lr"] = g["lr"]
            if cfg.optimizer == "sgd":
                self.optimizer = torch.optim.SGD(
                    groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0
                )
            else:
                self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr)
        else:
            known = {id(p) for g in self.optimizer.param_groups for p in g["params"]}
            for g in groups:
                g["params"] = [p for p in g["params"] if id(p) not in known]
                if g["params"]:
                    g["initial_lr"] = g["lr"]
                    self.optimizer.add_param_group(g)
        log.info("phase %s: %s", phase, model.parameter_counts())
        self.phase = phase
        self.cache = None  # the frozen prefix changed
        self._fast = None
        self._frozen_k = model.frozen_prefix()
        self._snapshot_frozen()

    def _snapshot_frozen(self):
        """Split the weights into what this phase can change and a CPU copy of the rest.

        A frozen parameter never changes, nor does a buffer (BatchNorm
        statistics) of a module that is in eval mode while training, so the
        per-epoch copy of the best weights (``_state``) copies only the rest: a
        head's few tensors instead of the whole network, every improved epoch.
        """
        model = self.model
        was_training = model.training
        model.train()  # the modes training runs in: frozen stages are in eval mode
        changing = {n for n, p in model.named_parameters() if p.requires_grad}
        for name, module in model.named_modules():
            if module.training:
                changing.update(f"{name}.{b}" if name else b for b, _ in module.named_buffers(recurse=False))
        model.train(was_training)
        self._live = model.state_dict()  # detached references, read at each copy
        self._frozen_cpu = {k: v.to("cpu", copy=True) for k, v in self._live.items() if k not in changing}

    # ---- data -------------------------------------------------------------------------
    def _inputs(self, idx: torch.Tensor, train: bool, raw: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised float input for dataset indices (augmented when training).

        ``raw`` is the uint8 batch when it was streamed from disk.
        """
        if raw is not None:
            x = raw.to(self.device, non_blocking=True)
        elif self.images is not None:
            x = self.images[idx.to(self.images.device)]
        else:
            x = self.data.images.get(idx.tolist()).to(self.device, non_blocking=True)
        x = x.float().div_(255)
        if train and not self.augment.is_identity:
            x = self.augment(x, generator=None)
        x = x.sub_(self.mean).div_(self.std)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _chunks(self, indices: torch.Tensor, bs: int):
        for i in range(0, len(indices), bs):
            yield indices[i : i + bs]

    def _batches(self, indices: torch.Tensor, bs: int):
        """(dataset indices, streamed uint8 images or None) in the given order.

        In memory (or from the cache) a batch is an index; beyond the memory
        budget the store decodes ahead in worker processes.
        """
        if self.images is not None or self.cache is not None:
            for idx in self._chunks(indices, bs):
                yield idx, None
        else:
            for raw, idx in self.data.images.batches(indices.tolist(), bs, shuffle=False):
                yield idx, raw

    def _maybe_cache(self):
        """Build the feature cache for the current frozen prefix, if it applies and fits."""
        model, cfg = self.model, self.cfg
        k = self._frozen_k
        if cfg.cache == "off" or k == 0 or not self.augment.is_identity:
            self.cache = None
            return
        if self.cache is not None and self.cache.k == k:
            return
        all_idx = torch.tensor(sorted(set(self.data.train_idx) | set(self.data.val_idx)))
        bs = max(self.batch_size, 64)
        dtype = getattr(torch, cfg.cache_dtype)
        model.train()  # frozen stages are in eval mode either way

        def batches():
            for idx, raw in self._batches(all_idx, bs):
                self._check_stop()
                with self._autocast():
                    yield self._inputs(idx, train=False, raw=raw), idx

        self.cache = FeatureCache.build(
            model,
            k,
            batches(),
            run_prefix=self._fast_prefix(),
            n_images=len(all_idx),
            dtype=dtype,
            budget_bytes=cfg.cache_budget_mb * 2**20,
            device=self.device,
        )

    def _fast_prefix(self) -> FrozenPrefix | None:
        """The folded inference copy of the current frozen prefix (None if nothing is frozen)."""
        k = self._frozen_k
        if k == 0 or not self.cfg.fold_frozen:
            return None
        if self._fast is None or self._fast.k != k:
            self._fast = FrozenPrefix(
                self.model, k, self.device, channels_last=self.channels_last or self.device.type == "cpu"
            )
        return self._fast

    def _forward(self, idx: torch.Tensor, train: bool, raw: torch.Tensor | None = None) -> torch.Tensor:
        if self.cache is not None:
            h, feats = self.cache.get(idx)
            return self.model.suffix(h, feats, self.cache.k)
        x = self._inputs(idx, train, raw)
        fast = self._fast_prefix()
        if fast is None:
            return self.model(x)
        # Frozen layers are constants: run their folded copy, then the rest.
        h, feats = fast(x)
        return self.model.suffix(h, feats, fast.k)

    def _check_stop(self):
        if self.stop_event is not None and self.stop_event.is_set():
            raise Stopped()

    # ---- one epoch --------------------------------------------------------------------
    def _train_epoch(self, epoch: int, total_steps: int, warmup: int) -> dict:
        model, cfg, opt = self.model, self.cfg, self.optimizer
        if not model.training:  # train() walks every module: ~10 ms that a cached epoch notices
            model.train()
        train_idx = torch.tensor(self.data.train_idx)
        if cfg.balance == "sampler":
            from ..data import balanced_sampler

            labels = self.data.labels[train_idx]
            order = train_idx[balanced_sampler(labels, len(train_idx), self.gen)]
        else:
            order = train_idx[torch.randperm(len(train_idx), generator=self.gen)]
        bs = self.batch_size
        n_steps = math.ceil(len(order) / bs)
        losses: list[torch.Tensor] = []
        window_start = self.step
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen = 0
        t0 = time.perf_counter()
        t_window = t0
        for b, (idx, raw) in enumerate(self._batches(order, bs)):
            self._check_stop()
            for cb in self.callbacks:
                cb(self, "batch", {"epoch": epoch, "step": self.step, "batch_size": len(idx)})
            f = lr_factor(self.step, total_steps, warmup, cfg.schedule)
            for g in opt.param_groups:
                g["lr"] = g["initial_lr"] * f
            y = self.labels[idx.to(self.labels.device)]
            with self._autocast():
                out = self._forward(idx, train=True, raw=raw)
                loss = self.criterion(out.float(), y)
            opt.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.step(opt)
                self.scaler.update()
            else:
                loss.backward()
                opt.step()
            d = loss.detach()
            losses.append(d)
            loss_sum += d * len(idx)
            correct += _accuracy_count(out.detach(), y)
            seen += len(idx)
            self.step += 1
            if len(losses) >= cfg.sync_every or b == n_steps - 1:
                now = time.perf_counter()
                self._flush(losses, window_start, epoch, now - t_window, bs, f)
                losses, window_start, t_window = [], self.step, now
                elapsed = now - t0
                rate = seen / elapsed if elapsed > 0 else 0.0
                remaining = (n_steps - b - 1) * elapsed / (b + 1) + (
                    (self.cfg.epochs - epoch - 1) * n_steps * elapsed / (b + 1)
                )
                self.metrics.set_progress(
                    epoch=epoch + 1,
                    epochs=self.cfg.epochs,
                    step=b + 1,
                    steps_per_epoch=n_steps,
                    global_step=self.step,
                    images_per_second=rate,
                    eta_seconds=remaining,
                    batch_size=bs,
                )
        dt = time.perf_counter() - t0
        stats = torch.stack([loss_sum / max(seen, 1), correct.float() / max(seen, 1)]).tolist()
        return {"train_loss": stats[0], "train_accuracy": stats[1], "images_per_second": seen / dt}

    def _flush(self, losses, first_step, epoch, seconds, bs, factor):
        values = torch.stack(losses).float().tolist()  # one device sync per window
        for i, v in enumerate(values):
            if not math.isfinite(v):
                s = first_step + i
                raise NonFiniteLoss(
                    f"loss became {v} at step {s + 1} (steps {first_step + 1}-{first_step + len(values)}, "
                    f"epoch {epoch + 1}); try a lower learning rate"
                )
        elapsed = time.time() - self.metrics.started
        lr = self.cfg.lr * factor
        rate = len(values) * bs / seconds if seconds > 0 else 0.0
        self.metrics.add_steps(
            [
                {
                    "step": first_step + i + 1,
                    "epoch": epoch + 1,
                    "loss": v,
                    "lr": lr,
                    "images_per_second": rate,
                    "elapsed": elapsed,
                }
                for i, v in enumerate(values)
            ]
        )

    def _eval_mode(self, on: bool):
        """Inference mode for validation, and back.

        When the cache holds the whole body only the head runs, so only the head
        switches: ``TransferModel.train`` walks every module (~8 ms each way,
        which a cached epoch of a few milliseconds notices).
        """
        if self.cache is not None and self.cache.k == len(self.model.body):
            self.model.head.train(not on)
        elif on:
            self.model.eval()
        else:
            self.model.train()

    @torch.no_grad()
    def evaluate(self) -> dict:
        val_idx = torch.tensor(self.data.val_idx)
        if len(val_idx) == 0:
            return {"val_loss": float("nan"), "val_accuracy": float("nan")}
        self._eval_mode(True)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        for idx, raw in self._batches(val_idx, max(self.batch_size, 64)):
            self._check_stop()
            y = self.labels[idx.to(self.labels.device)]
            with self._autocast():
                out = self._forward(idx, train=False, raw=raw).float()
            loss_sum += self.val_criterion(out, y) * len(idx)
            correct += _accuracy_count(out, y)
        n = len(val_idx)
        v = torch.stack([loss_sum / n, correct.float() / n]).tolist()
        self._eval_mode(False)
        return {"val_loss": v[0], "val_accuracy": v[1]}

    # ---- the whole run -------------------------------------------------------------------
    def _state(self) -> dict[str, torch.Tensor]:
        """A CPU copy of the current weights that later training cannot alter."""
        if self.phase is None:  # before the first phase: nothing is split yet
            return {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        frozen = self._frozen_cpu
        return {k: frozen[k] if k in frozen else v.to("cpu", copy=True) for k, v in self._live.items()}

    def _metadata(self, validated: bool, epoch: int | None) -> dict[str, str]:
        return {
            "format": "tl-studio",
            "classes": json.dumps(self.data.classes, ensure_ascii=False),
            "plan": self.plan.to_json(),
            "validated": "true" if validated else "false",
            "epoch": "" if epoch is None else str(epoch),
        }

    def _write_config(self):
        rd = self.run_dir
        cfg = {
            "model": self.plan.model,
            "plan": self.plan.to_dict(),
            "train": self.cfg.to_dict(),
            "seed": self.cfg.seed,
            "dataset": {"classes": self.data.classes, **self.data.info},
            "versions": rundir.versions(),
            "device": str(self.device),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        rundir.write_json(rd / rundir.CONFIG, cfg)

    def _stop_requested(self) -> bool:
        return self.stop_event is not None and self.stop_event.is_set()

    def _save_best(self, best: dict):
        """Write the best weights if a better epoch came since the last write."""
        if best.get("unsaved") and best["state"] is not None:
            rundir.save_weights(self.run_dir / rundir.WEIGHTS, best["state"], self._metadata(True, best["epoch"]))
            best["unsaved"] = False

    def _save_last(self, epoch: int, best: dict):
        rundir.save_last(
            self.run_dir / rundir.LAST,
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "epoch": epoch,
                "step": self.step,
                "batch_size": self.batch_size,
                "phase": self.phase,
                "best": {k: v for k, v in best.items() if k not in ("state", "unsaved")},
                "rng": torch.get_rng_state(),
                "gen": self.gen.get_state(),
            },
        )

    def _restore(self, best: dict) -> int:
        """Load last.pt; returns the epoch to continue from."""
        payload = rundir.load_last(self.run_dir / rundir.LAST)
        start = int(payload["epoch"]) + 1
        # Replay the phases so the optimizer has the same groups in the same order.
        for e in range(start):
            self._enter_phase(self._phase_for(e))
        try:
            self.model.load_state_dict(payload["model"])
            self.optimizer.load_state_dict(payload["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise rundir.RunError(f"{self.run_dir / rundir.LAST}: does not match this plan ({exc})") from None
        self._snapshot_frozen()  # the loaded weights, not the ones the phases were entered with
        self.step = int(payload["step"])
        self.batch_size = int(payload.get("batch_size", self.batch_size))
        torch.set_rng_state(payload["rng"])
        self.gen.set_state(payload["gen"])
        best.update(payload.get("best", {}))
        tables = rundir.read_tables(self.run_dir)
        steps, epochs = tables["steps"], tables["epochs"]
        if (self.run_dir / rundir.WEIGHTS).exists():
            state, meta = rundir.load_weights(self.run_dir / rundir.WEIGHTS)
            saved_epoch = int(meta["epoch"]) if meta.get("validated") == "true" and meta.get("epoch") else None
            if saved_epoch is not None and saved_epoch != best.get("epoch") and epochs is not None:
                # Best weights written when the run stopped, after its last checkpoint:
                # validated weights all the same, with their row in the metrics table.
                row = epochs[epochs["epoch"] == saved_epoch]
                if len(row):
                    best.update(epoch=saved_epoch, val_accuracy=float(row["val_accuracy"].iloc[0]),
                                val_loss=float(row["val_loss"].iloc[0]))
            if best.get("epoch") is not None and saved_epoch == best["epoch"]:
                best["state"] = state
        # The tables are written every epoch, last.pt at most every CHECKPOINT_SECONDS:
        # rows past the checkpoint will be trained again.
        if steps is not None:
            steps = steps[steps["step"] <= self.step]
        if epochs is not None:
            epochs = epochs[epochs["epoch"] <= start]
        self.metrics.load(steps, epochs)
        log.info("resuming at epoch %d (step %d)", start + 1, self.step)
        return start

    def fit(self) -> TrainResult:
        cfg = self.cfg
        self._build()
        if self.run_dir:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        best: dict = {"epoch": None, "val_accuracy": None, "val_loss": None, "state": None}
        start = 0
        if self.resume:
            start = self._restore(best)
        elif self.run_dir:
            self._write_config()
        t_start = time.perf_counter()
        last_checkpoint = t_start
        epochs_run, bad_epochs, status = start, 0, "finished"
        rates: list[float] = []
        used_cache = False
        ended = False
        try:
            epoch = start
            while epoch < cfg.epochs:
                self._enter_phase(self._phase_for(epoch))
                self._maybe_cache()
                used_cache = used_cache or self.cache is not None
                n_steps = math.ceil(len(self.data.train_idx) / self.batch_size)
                total = self.step + (cfg.epochs - epoch) * n_steps
                warmup = int(cfg.warmup_epochs * n_steps)
                try:
                    row = self._train_epoch(epoch, total, warmup)
                except torch.cuda.OutOfMemoryError:
                    self._halve_batch()
                    continue  # retry this epoch with the smaller batch
                row.update(self.evaluate())
                epochs_run = epoch + 1
                rates.append(row["images_per_second"])
                lr_now = self.optimizer.param_groups[-1]["lr"]
                self.metrics.add_epoch(
                    {
                        "epoch": epoch + 1,
                        "phase": self.phase,
                        **row,
                        "lr": lr_now,
                        "elapsed": time.time() - self.metrics.started,
                        "cached": self.cache is not None,
                    }
                )
                improved = best["val_accuracy"] is None or (row["val_accuracy"], -row["val_loss"]) > (
                    best["val_accuracy"],
                    -best["val_loss"],
                )
                if improved and math.isfinite(row["val_loss"]):
                    best.update(epoch=epoch + 1, val_accuracy=row["val_accuracy"], val_loss=row["val_loss"])
                    best["state"] = self._state()
                    best["unsaved"] = True
                stop_early = False
                if cfg.early_stopping:
                    best_loss = min(
                        (r for r in self.metrics.snapshot()["epochs"]["val_loss"].tolist()[:-1]),
                        default=math.inf,
                    )
                    bad_epochs = 0 if row["val_loss"] < best_loss else bad_epochs + 1
                    stop_early = bad_epochs >= cfg.early_stopping
                if self.run_dir:
                    last = epoch == start or epoch == cfg.epochs - 1 or stop_early
                    if last or self._stop_requested() or time.perf_counter() - last_checkpoint >= CHECKPOINT_SECONDS:
                        rundir.write_tables(self.run_dir, self.metrics.snapshot())
                        self._save_best(best)
                        if cfg.save_last:
                            self._save_last(epoch, best)
                        last_checkpoint = time.perf_counter()
                for cb in self.callbacks:
                    cb(self, "epoch", {"epoch": epoch, **row})
                if stop_early:
                    log.info("early stopping: no better validation loss for %d epochs", bad_epochs)
                    break
                epoch += 1
            ended = True
        except Stopped:
            status = "stopped"
            ended = True
            log.info("stopped at epoch %d, step %d", epochs_run + 1, self.step)
        finally:
            # Whatever ends the run (a stop, a crash, a non-finite loss), the best
            # weights validated so far reach the disk, and after a crash the tables
            # too (otherwise they are written below).
            if self.run_dir:
                self._save_best(best)
                if not ended:
                    rundir.write_tables(self.run_dir, self.metrics.snapshot())
        train_seconds = time.perf_counter() - t_start
        validated = best["state"] is not None
        if validated:
            state = best["state"]
        else:
            state = self._state()
            if self.run_dir and rundir.all_finite(state):
                rundir.save_weights(self.run_dir / rundir.WEIGHTS, state, self._metadata(False, None))
        result = TrainResult(
            status=status,
            best_epoch=best["epoch"],
            best_val_accuracy=best["val_accuracy"],
            validated=validated,
            epochs_run=epochs_run,
            train_seconds=train_seconds,
            images_per_second=(sorted(rates)[len(rates) // 2] if rates else 0.0),
            device=devices.describe(self.device),
            state=state,
            cached=used_cache,
            batch_size=self.batch_size,
        )
        result.summary = self._summary(result)
        if self.run_dir:
            rundir.write_tables(self.run_dir, self.metrics.snapshot())
            rundir.write_json(self.run_dir / rundir.SUMMARY, result.summary)
        return result

    def _halve_batch(self):
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

    def _summary(self, r: TrainResult) -> dict:
        return {
            "status": r.status,
            "model": self.plan.model,
            "best_val_accuracy": r.best_val_accuracy,
            "best_epoch": r.best_epoch,
            "epochs_run": r.epochs_run,
            "epochs_planned": self.cfg.epochs,
            "validated": r.validated,
            "train_seconds": round(r.train_seconds, 3),
            "images_per_second": round(r.images_per_second, 2),
            "device": r.device,
            "batch_size": r.batch_size,
            "feature_cache": r.cached,
            "classes": self.data.classes,
            "parameters": self.model.parameter_counts() if self.model is not None else {},
        }
