"""The best epoch so far and a copy of its weights that later training cannot alter."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


@dataclass
class Best:
    """The best validated epoch: highest validation accuracy, then lowest validation loss."""

    epoch: int | None = None  # 1-based, as in the metrics table
    val_accuracy: float | None = None
    val_loss: float | None = None
    state: dict[str, torch.Tensor] | None = field(default=None, repr=False)  # CPU copy of its weights
    unsaved: bool = False  # newer than the weights file on disk

    @property
    def validated(self) -> bool:
        return self.state is not None

    def improves(self, val_accuracy: float, val_loss: float) -> bool:
        """Whether an epoch with these validation numbers beats the best (never a NaN or inf loss)."""
        if not math.isfinite(val_loss):
            return False
        return self.val_accuracy is None or (val_accuracy, -val_loss) > (self.val_accuracy, -self.val_loss)

    def take(self, epoch: int, val_accuracy: float, val_loss: float, state: dict[str, torch.Tensor]) -> None:
        self.epoch, self.val_accuracy, self.val_loss, self.state = epoch, val_accuracy, val_loss, state
        self.unsaved = True

    def numbers(self) -> dict:
        """What a checkpoint stores (the weights are in the weights file)."""
        return {"epoch": self.epoch, "val_accuracy": self.val_accuracy, "val_loss": self.val_loss}

    def restore(self, numbers: dict) -> None:
        for key in ("epoch", "val_accuracy", "val_loss"):
            if key in numbers:
                setattr(self, key, numbers[key])


class Snapshots:
    """CPU copies of a model's weights, copying only what the current phase can change.

    A frozen parameter never changes, nor does a buffer (BatchNorm
    statistics) of a module that is in eval mode while training, so a copy of
    the best weights takes only the rest: a head's few tensors instead of the
    whole network, every improved epoch. :meth:`split` must run again whenever
    what trains changes (a new phase) or the weights are replaced (a resume).
    """

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self._live: dict[str, torch.Tensor] | None = None
        self._frozen_cpu: dict[str, torch.Tensor] = {}

    def split(self) -> None:
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

    def take(self) -> dict[str, torch.Tensor]:
        """A CPU copy of the current weights that later training cannot alter."""
        if self._live is None:  # before the first phase: nothing is split yet
            return {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        frozen = self._frozen_cpu
        return {k: frozen[k] if k in frozen else v.to("cpu", copy=True) for k, v in self._live.items()}
