"""Repeated stratified k-fold splits of the training rows.

Within a repeat, the rows of each class are shuffled and dealt round-robin to
the folds, continuing the count from the previous class (classes taken in a
shuffled order). Each class is spread as evenly as it can be, and fold sizes
differ by at most one row.

Small classes:

* a class with fewer members than folds still has each member in a different
  fold, so every fold's training part keeps at least one member of it;
* a class with a single member is never held out (it stays in every fold's
  training part): holding out the only example would test nothing but the
  class's absence and leave the training part without it. It is not scored.

Deterministic for a seed: one ``torch.Generator`` seeded once drives all repeats.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)

Split = tuple[torch.Tensor, torch.Tensor]  # (training row indices, held-out row indices), int64, sorted


def stratified_folds(y: torch.Tensor, folds: int = 5, repeats: int = 1, seed: int = 0) -> list[Split]:
    """``folds * repeats`` (train, held-out) index pairs; repeat r's folds are entries r*folds .. r*folds+folds-1."""
    y = torch.as_tensor(y).long().reshape(-1)
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    classes, counts = torch.unique(y, return_counts=True)
    singletons = classes[counts == 1]
    scorable = int(counts[counts > 1].sum())
    if scorable < folds:
        raise ValueError(
            f"folds: {folds} folds need at least {folds} rows in classes with two or more members, "
            f"found {scorable}"
        )
    if singletons.numel():
        log.info("stratified_folds: %d class(es) with one member stay in every training part, never scored",
                 singletons.numel())
    if int(counts.min()) < folds:
        log.debug("stratified_folds: smallest class has %d members for %d folds", int(counts.min()), folds)
    gen = torch.Generator().manual_seed(int(seed))
    rows = torch.arange(y.numel())
    splits: list[Split] = []
    for _ in range(repeats):
        fold_of = torch.full((y.numel(),), -1, dtype=torch.long)
        position = 0
        for c in classes[torch.randperm(classes.numel(), generator=gen)]:
            members = rows[y == c]
            if members.numel() == 1:
                continue
            members = members[torch.randperm(members.numel(), generator=gen)]
            fold_of[members] = (position + torch.arange(members.numel())) % folds
            position += members.numel()
        for f in range(folds):
            held = fold_of == f
            splits.append((rows[~held], rows[held]))
    return splits
