"""Decoded images per workspace, reused by the similarity measure, the sweep and training."""

from __future__ import annotations

from ..registry import get_spec
from ..train import TrainData, data_from_dataset


def decoded(ws, model: str, progress=None, publish=None) -> TrainData:
    """The workspace's dataset decoded once for ``model``'s input geometry.

    Models that share resize, crop and interpolation share the uint8 store
    (normalisation happens later, on the training device).
    """
    ds = ws.dataset
    p = get_spec(model).preprocess
    key = (ds.fingerprint, str(ds.root), p.input_size, p.resize_size, p.interpolation)
    with ws.lock:
        cached = ws.state.get("decoded")
        if cached is not None and cached[0] == key:
            return cached[1]
    data = data_from_dataset(ds, model, progress=progress, publish=publish)
    with ws.lock:
        ws.state["decoded"] = (key, data)
    return data
