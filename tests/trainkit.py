"""Shared pieces for the training tests: the demo dataset decoded once per session."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from tl_studio.data import ImageStore, load_dataset
from tl_studio.registry import get_spec
from tl_studio.train import TrainData

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "assets" / "demo"


@functools.cache
def demo_dataset():
    return load_dataset(DEMO)


@functools.cache
def _demo_store():
    ds = demo_dataset()
    # efficientnet_lite0 and mobilenet_v3_small share resize 256 / crop 224 / bilinear,
    # so one uint8 store serves both (normalisation happens in the trainer).
    return ImageStore(ds.paths, get_spec("efficientnet_lite0").preprocess)


def demo_data(per_class_train: int | None = None, per_class_val: int | None = None) -> TrainData:
    """The demo dataset as TrainData, optionally a small per-class subset of it."""
    ds = demo_dataset()
    labels = torch.tensor(ds.labels)

    def take(indices, n):
        if n is None:
            return list(indices)
        out, seen = [], {}
        for i in indices:
            c = int(labels[i])
            if seen.get(c, 0) < n:
                out.append(i)
                seen[c] = seen.get(c, 0) + 1
        return out

    return TrainData(
        _demo_store(),
        labels,
        take(ds.train_idx, per_class_train),
        take(ds.val_idx, per_class_val),
        list(ds.classes),
        {"fingerprint": ds.fingerprint, **ds.file_lists()},
    )
