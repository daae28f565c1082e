"""Counter-weighting imbalanced classes: loss weights or a balanced sampler."""

from __future__ import annotations

import torch


def _counts(labels, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"labels: must be in [0, {num_classes}), got values from {int(y.min())} to {int(y.max())}")
    return y, torch.bincount(y, minlength=num_classes).to(torch.float64)


def class_weights(labels, num_classes: int) -> torch.Tensor:
    """Per-class loss weights proportional to 1 / frequency, with mean 1 over the classes present.

    A class with no examples gets weight 0 (it never appears in the loss anyway).
    """
    _, counts = _counts(labels, num_classes)
    present = counts > 0
    if not present.any():
        raise ValueError("labels: empty; cannot weight classes")
    w = torch.zeros(num_classes, dtype=torch.float64)
    w[present] = 1.0 / counts[present]
    w[present] /= w[present].mean()
    return w.float()


def balanced_sampler(labels, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Positions into ``labels`` drawn with replacement so that every class is equally likely."""
    y = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    if len(y) == 0:
        raise ValueError("labels: empty; nothing to sample")
    _, counts = _counts(y, int(y.max()) + 1)
    per_sample = (1.0 / counts)[y]
    return torch.multinomial(per_sample, int(num_samples), replacement=True, generator=generator)
