"""Measuring a whole imported dataset: similarity, transferability and the sweep.

One place decides which images are used (a stratified, deterministic sample)
and decodes them once, for the CLI (``recommend --data``, ``train --plan
auto``) and the UI alike.
"""

from __future__ import annotations

import logging

import pandas as pd
import torch

from ..progress import DECODING, Meter
from .similarity import MAX_IMAGES, SimilarityReport, measure_similarity
from .sweep import freeze_depth_sweep

log = logging.getLogger(__name__)

# The sweep fits probes on at most this many images (the same share of every
# class): enough for a stable curve, and a forward pass over them stays short on a CPU.
SWEEP_MAX_TRAIN = 1000
SWEEP_MAX_VAL = 500


def stratified(indices: list[int], labels: list[int], limit: int) -> list[int]:
    """At most ``limit`` of ``indices``, the same share from every class (deterministic)."""
    if len(indices) <= limit:
        return list(indices)
    g = torch.Generator().manual_seed(0)
    order = [indices[i] for i in torch.randperm(len(indices), generator=g).tolist()]
    by_class: dict[int, list[int]] = {}
    for i in order:
        by_class.setdefault(labels[i], []).append(i)
    share = limit / len(indices)
    picked = [i for members in by_class.values() for i in members[: max(1, round(len(members) * share))]]
    return sorted(picked[:limit])


def measure_dataset(
    model_name: str,
    dataset,
    *,
    sweep: bool = False,
    similarity: bool = True,
    store=None,
    device: str | None = None,
    publish=None,
) -> tuple[SimilarityReport | None, pd.DataFrame | None]:
    """Similarity report (and sweep table) for a :class:`tl_studio.data.Dataset`.

    ``store``: an :class:`~tl_studio.data.ImageStore` already decoded for all
    the dataset's items at this model's input size (reused, not decoded again).
    ``publish`` hears each long step as a :class:`~tl_studio.progress.Progress`:
    decoding, the feature passes, the sweep's probes.
    """
    from ..data import ImageStore
    from ..registry import get_spec

    labels = dataset.labels
    if sweep and not dataset.val_idx:
        raise ValueError("the sweep needs validation images and the split has none")
    sim_idx = stratified(dataset.train_idx, labels, MAX_IMAGES) if similarity else []
    tr_idx = stratified(dataset.train_idx, labels, SWEEP_MAX_TRAIN) if sweep else []
    va_idx = stratified(dataset.val_idx, labels, SWEEP_MAX_VAL) if sweep else []
    if store is None:
        wanted = sorted(set(sim_idx) | set(tr_idx) | set(va_idx))
        row = {i: r for r, i in enumerate(wanted)}
        decoding = Meter(DECODING, len(wanted), "images", publish).fractions() if publish is not None else None
        store = ImageStore([dataset.items[i].path for i in wanted], get_spec(model_name).preprocess,
                           progress=decoding)
        for r, err in store.errors.items():
            log.warning("%s: %s (a blank image stands in for it)", dataset.items[wanted[r]].rel, err)
    else:
        row = {i: i for i in range(len(dataset.items))}

    def take(idx):
        return store.get([row[i] for i in idx]), torch.tensor([labels[i] for i in idx])

    report = measure_similarity(model_name, *take(sim_idx), device=device, publish=publish) if similarity else None
    table = (freeze_depth_sweep(model_name, *take(tr_idx), *take(va_idx), device=device, publish=publish)
             if sweep else None)
    return report, table
