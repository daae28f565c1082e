"""One pass over the data: a training epoch and a validation pass, with their metrics.

Losses and correct counts accumulate on the device and are copied off every
``sync_every`` steps (and at the end of the epoch), never with an ``.item()``
per step; a NaN or infinite loss is caught there and names its step. Each
step publishes a "step" progress event; the live position the UI and CLI
poll (``MetricsLog.progress()``) moves at each copy.

Under torchrun (``trainer.dist``) each rank trains its slice of every global
batch and validates its share of the images; the numbers copied off are sums
over the ranks, so every rank sees (and stops on) the same ones
(distributed.py).
"""

from __future__ import annotations

import math
import time

import torch

from ..progress import STEP, Meter
from . import distributed, phases
from .errors import NonFiniteLoss, Stopped
from .schedule import lr_factor


def _correct(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (logits.argmax(1) == y).sum()


def _order(trainer, train_idx: torch.Tensor) -> torch.Tensor:
    """This epoch's order of the training images: shuffled, or class-balanced when asked."""
    if trainer.cfg.balance == "sampler":
        from ..data import balanced_sampler

        labels = trainer.data.labels[train_idx]
        return train_idx[balanced_sampler(labels, len(train_idx), trainer.gen)]
    return train_idx[torch.randperm(len(train_idx), generator=trainer.gen)]


def train_epoch(trainer, epoch: int, total_steps: int, warmup: int) -> dict:
    """Train one epoch (0-based ``epoch``); returns its train loss, accuracy and images per second."""
    t = trainer
    model, cfg, opt, inputs = t.model, t.cfg, t.optimizer, t.inputs
    if not model.training:  # train() walks every module: ~10 ms that a cached epoch notices
        model.train()
    order = _order(t, torch.tensor(t.data.train_idx))
    bs = t.batch_size
    d = t.dist
    # Under torchrun, this rank's slice of each global batch of the one seeded order.
    mine, per_rank, sizes = distributed.split_epoch(order, bs, d)
    n_steps = len(sizes)
    head = phases.head_group(opt)
    losses: list[torch.Tensor] = []
    lrs: list[float] = []
    window_start = t.step
    loss_sum = torch.zeros((), device=t.device)
    correct = torch.zeros((), device=t.device, dtype=torch.long)
    seen = 0
    meter = Meter(STEP, n_steps, "steps", t.metrics.publish)
    t0 = time.perf_counter()
    t_window = t0
    for b, (idx, raw) in enumerate(inputs.batches(mine, per_rank)):
        distributed.fault_point(t.step + 1, t.stop_event)  # a test hook: nothing unless TL_STUDIO_FAULT says
        if d is None:  # under torchrun the ranks agree on a stop at the window's copy, below
            t.check_stop()
        for cb in t.callbacks:
            cb(t, "batch", {"epoch": epoch, "step": t.step, "batch_size": len(idx)})
        phases.set_lr(opt, lr_factor(t.step, total_steps, warmup, cfg.schedule))
        lrs.append(head["lr"])
        y = inputs.labels_of(idx)
        with t.autocast():
            out = inputs.forward(idx, train=True, raw=raw)
            loss = t.criterion(out.float(), y)
        weight = distributed.loss_weight(d, len(idx), sizes[b])
        step_loss = loss if weight == 1.0 else loss * weight
        opt.zero_grad(set_to_none=True)
        if t.scaler is not None:
            t.scaler.scale(step_loss).backward()
            t.scaler.step(opt)
            t.scaler.update()
        else:
            step_loss.backward()
            opt.step()
        detached = loss.detach()
        # Under torchrun: this rank's share of the global batch's mean loss (summed over ranks at the copy).
        losses.append(detached if d is None else detached * (len(idx) / sizes[b]))
        loss_sum += detached * len(idx)
        correct += _correct(out.detach(), y)
        seen += len(idx)
        t.step += 1
        meter.update(b + 1)
        if len(losses) >= cfg.sync_every or b == n_steps - 1:
            now = time.perf_counter()
            stop = False
            if d is not None:
                losses, stop = distributed.window(t, losses)
            _flush(t.metrics, losses, lrs, window_start, epoch, now - t_window, bs)
            losses, lrs, window_start, t_window = [], [], t.step, now
            elapsed = now - t0
            rate = seen / elapsed if elapsed > 0 else 0.0
            remaining = (n_steps - b - 1) * elapsed / (b + 1) + (
                (cfg.epochs - epoch - 1) * n_steps * elapsed / (b + 1)
            )
            t.metrics.set_progress(
                epoch=epoch + 1,
                epochs=cfg.epochs,
                step=b + 1,
                steps_per_epoch=n_steps,
                global_step=t.step,
                images_per_second=rate,
                eta_seconds=remaining,
                batch_size=bs,
            )
            if stop:
                raise Stopped()
    dt = time.perf_counter() - t0
    if d is not None:
        totals = distributed.all_sum(d, torch.stack([loss_sum, correct.float(),
                                                     torch.tensor(float(seen), device=t.device)]))
        loss_sum, correct, seen = totals[0], totals[1], int(totals[2].item())
    stats = torch.stack([loss_sum / max(seen, 1), correct.float() / max(seen, 1)]).tolist()
    return {"train_loss": stats[0], "train_accuracy": stats[1], "images_per_second": seen / dt}


def _flush(metrics, losses, lrs, first_step, epoch, seconds, bs) -> None:
    """Copy a window of step losses off the device (one sync) into the step table."""
    values = torch.stack(losses).float().tolist()
    for i, v in enumerate(values):
        if not math.isfinite(v):
            s = first_step + i
            raise NonFiniteLoss(
                f"loss became {v} at step {s + 1} (steps {first_step + 1}-{first_step + len(values)}, "
                f"epoch {epoch + 1}); try a lower learning rate"
            )
    elapsed = time.time() - metrics.started
    rate = len(values) * bs / seconds if seconds > 0 else 0.0
    metrics.add_steps(
        [
            {
                "step": first_step + i + 1,
                "epoch": epoch + 1,
                "loss": v,
                "lr": lr,  # the head's rate at that step
                "images_per_second": rate,
                "elapsed": elapsed,
            }
            for i, (v, lr) in enumerate(zip(values, lrs))
        ]
    )


def _eval_mode(trainer, on: bool) -> None:
    """Inference mode for validation, and back.

    When the cache holds the whole body only the head runs, so only the head
    switches: ``TransferModel.train`` walks every module (~8 ms each way,
    which a cached epoch of a few milliseconds notices).
    """
    model, cache = trainer.model, trainer.inputs.cache
    if cache is not None and cache.k == len(model.body):
        model.head.train(not on)
    elif on:
        model.eval()
    else:
        model.train()


@torch.no_grad()
def validate(trainer) -> dict:
    """Validation loss and accuracy (NaN for both when there are no validation images)."""
    t = trainer
    val_idx = torch.tensor(t.data.val_idx)
    if len(val_idx) == 0:
        return {"val_loss": float("nan"), "val_accuracy": float("nan")}
    _eval_mode(t, True)
    loss_sum = torch.zeros((), device=t.device)
    correct = torch.zeros((), device=t.device, dtype=torch.long)
    # Under torchrun each rank validates its share (check_stop is then a no-op: ranks stop together, in training).
    for idx, raw in t.inputs.batches(distributed.split_rows(val_idx, t.dist), max(t.batch_size, 64)):
        t.check_stop()
        y = t.inputs.labels_of(idx)
        with t.autocast():
            out = t.inputs.forward(idx, train=False, raw=raw).float()
        loss_sum += t.val_criterion(out, y) * len(idx)
        correct += _correct(out, y)
    n = len(val_idx)
    if t.dist is not None:
        loss_sum, correct = distributed.all_sum(t.dist, torch.stack([loss_sum, correct.float()])).unbind()
    v = torch.stack([loss_sum / n, correct.float() / n]).tolist()
    _eval_mode(t, False)
    return {"val_loss": v[0], "val_accuracy": v[1]}
