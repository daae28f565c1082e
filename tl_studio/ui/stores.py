"""Decoded images per workspace, reused by the similarity measure, the sweep and training."""

from __future__ import annotations

from ..features import FeatureStore
from ..registry import get_spec
from ..train import TrainData, data_from_dataset


def feature_store(ws) -> FeatureStore:
    """Where this workspace's feature sets are cached (the workspace says: see Workspace.feature_cache)."""
    return FeatureStore(ws.feature_cache)


def decoded(ws, model: str, dataset=None, progress=None, publish=None) -> TrainData:
    """``dataset`` (default: the workspace's current one) decoded once for ``model``'s input geometry.

    A job passes the dataset it was started with: loading other data while it
    waits in the queue must not change what it trains on. Models that share
    resize, crop and interpolation share the uint8 store (normalisation
    happens later, on the training device).
    """
    ds = ws.session.dataset if dataset is None else dataset
    p = get_spec(model).preprocess
    key = (ds.fingerprint, str(ds.root), p.input_size, p.resize_size, p.interpolation)
    with ws.lock:
        cached = ws.cache.get("decoded")
        if cached is not None and cached[0] == key:
            return cached[1]
    data = data_from_dataset(ds, model, progress=progress, publish=publish)
    data.feature_store = feature_store(ws)
    with ws.lock:
        ws.cache["decoded"] = (key, data)
    return data
