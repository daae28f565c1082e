"""Datasets: import (folders, zips, CSVs, per-class uploads), validation, split, and the tensor pipeline.

The training engine uses::

    ds = load_dataset(path, val_fraction=0.2, seed=0)
    store = ImageStore(ds.paths, get_spec(model).preprocess)   # decoded once, uint8
    aug = Augment.from_preset("light")
    x = normalize(aug(store.get(idx).float() / 255), mean, std)   # tl_studio.preprocess
"""

from .archive import ExtractReport, ZipLimits, safe_extract
from ..preprocess import normalize  # re-exported: the tensor pipeline above
from .augment import PRESETS, Augment
from .balance import balanced_sampler, class_weights
from .builder import AddReport, DatasetBuilder
from .dataset import Dataset, Item
from .errors import DatasetError
from .images import ALLOWED_FORMATS, MAX_PIXELS, ImageRejected, check_image, load_rgb
from .importers import load_dataset
from .store import ImageStore, preprocess_image
from .summary import Summary

__all__ = [
    "ALLOWED_FORMATS",
    "MAX_PIXELS",
    "PRESETS",
    "AddReport",
    "Augment",
    "Dataset",
    "DatasetBuilder",
    "DatasetError",
    "ExtractReport",
    "ImageRejected",
    "ImageStore",
    "Item",
    "Summary",
    "ZipLimits",
    "balanced_sampler",
    "check_image",
    "class_weights",
    "load_dataset",
    "load_rgb",
    "normalize",
    "preprocess_image",
    "safe_extract",
]
