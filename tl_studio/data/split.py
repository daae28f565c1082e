"""A stratified train/validation split that depends only on the labels, the order and the seed."""

from __future__ import annotations

import numpy as np

from .errors import DatasetError


def check_fraction(val_fraction: float) -> float:
    try:
        f = float(val_fraction)
    except (TypeError, ValueError):
        raise DatasetError(f"val_fraction: must be a number in [0, 1), got {val_fraction!r}") from None
    if not 0.0 <= f < 1.0:
        raise DatasetError(f"val_fraction: must be in [0, 1), got {val_fraction!r}")
    return f


def stratified_split(
    labels: list[int], val_fraction: float, seed: int
) -> tuple[list[int], list[int], list[int]]:
    """Split indices class by class.

    Returns ``(train, val, too_small)``: each class of two or more images
    gives ``round(n * val_fraction)`` images to validation, at least one and
    never all of them (when the fraction is above zero); a class of one image
    is too small to split and stays in training. Both index lists are sorted.
    """
    f = check_fraction(val_fraction)
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(int(y), []).append(i)
    train: list[int] = []
    val: list[int] = []
    too_small: list[int] = []
    for y in sorted(by_class):
        idx = by_class[y]
        n = len(idx)
        if f == 0.0:
            train += idx
            continue
        if n < 2:
            too_small.append(y)
            train += idx
            continue
        n_val = min(max(int(round(n * f)), 1), n - 1)
        order = rng.permutation(n)
        val += [idx[j] for j in order[:n_val]]
        train += [idx[j] for j in order[n_val:]]
    return sorted(train), sorted(val), too_small
