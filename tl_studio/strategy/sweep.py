"""The freeze-depth sweep: how much of the network transfers to these images.

With the whole backbone frozen, the pooled outputs of several body layers come
from ONE forward pass (:func:`.features.pooled_features`). At each depth a
linear probe is fitted on the training images' pooled features and scored on
the validation images. Validation accuracy against depth is the evidence for
where to cut or stop freezing: if the curve peaks early, the late (high-level)
layers do not transfer; if it climbs to the end, they do.

The probe is closed-form ridge regression onto one-hot labels (a ridge
classifier) on standardised features. Its regularisation is chosen per depth
by exact leave-one-out error on the training set (one SVD gives every
candidate's LOO residuals), so the validation set stays untouched for scoring.
"""

from __future__ import annotations

import logging

import pandas as pd
import torch

from ..layout import layout
from ..progress import PROBING, Meter
from .features import check_images, check_labels, pooled_features

log = logging.getLogger(__name__)

DEFAULT_DEPTHS = 8  # candidate layers when none are named: enough for a curve, one pass anyway
# Ridge strengths tried, relative to the mean squared singular value of the features.
RIDGE_GRID = tuple(10.0**e for e in range(-4, 3))
COLUMNS = ["depth", "layer", "position", "feature_dim", "train_accuracy", "val_accuracy", "ridge_lambda"]


def candidate_layers(model_name: str, count: int = DEFAULT_DEPTHS) -> list[str]:
    """About ``count`` body layers spread evenly over depth, always including the last.

    A pooling layer right after a spatial map gives the same pooled features as
    that map; only the pool (the later name) is kept.
    """
    body = layout(model_name).body
    keep = []
    for layer, nxt in zip(body, body[1:] + (None,)):
        if nxt is not None and nxt.kind == "pool" and len(layer.output_shape) == 3 \
                and nxt.pooled_width == layer.pooled_width:
            continue  # the next layer (a global pool) repeats this one's pooled features
        keep.append(layer.name)
    if len(keep) <= count:
        return keep
    step = (len(keep) - 1) / (count - 1)
    picks = sorted({round(j * step) for j in range(count)})
    return [keep[i] for i in picks]


def _standardise(train: torch.Tensor, val: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = train.mean(0, keepdim=True)
    std = train.std(0, unbiased=False, keepdim=True).clamp_min(1e-6)
    return (train - mean) / std, (val - mean) / std


def ridge_probe(
    train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor, num_classes: int
) -> dict[str, float]:
    """Fit a ridge classifier (LOO-chosen strength) and score it on both sets."""
    x, v = _standardise(train_x.double(), val_x.double())
    y = torch.nn.functional.one_hot(train_y, num_classes).double()
    y_mean = y.mean(0, keepdim=True)
    yc = y - y_mean
    u, s, vt = torch.linalg.svd(x, full_matrices=False)
    s2 = s * s
    uty = u.T @ yc
    scale = float(s2.mean()) if s2.numel() else 1.0
    best = None
    for rel in RIDGE_GRID:
        lam = rel * scale
        shrink = s2 / (s2 + lam)
        fitted = u @ (shrink[:, None] * uty)
        # Leave-one-out residuals of a linear smoother: r_i / (1 - H_ii). The
        # intercept (the label mean) adds 1/n to each leverage.
        lev = (u * u) @ shrink + 1.0 / x.shape[0]
        loo = (yc - fitted) / (1.0 - lev).clamp_min(1e-6)[:, None]
        loo_pred = (y - loo).argmax(1)
        err = float((loo_pred != train_y).double().mean())
        mse = float((loo * loo).mean())
        if best is None or (err, mse) < best[0]:
            best = ((err, mse), lam, shrink)
    _, lam, shrink = best
    w = vt.T @ ((shrink / s.clamp_min(1e-12))[:, None] * uty)  # (D, K)
    train_acc = float(((x @ w + y_mean).argmax(1) == train_y).double().mean())
    val_acc = float(((v @ w + y_mean).argmax(1) == val_y).double().mean())
    return {"train_accuracy": train_acc, "val_accuracy": val_acc, "ridge_lambda": float(f"{lam:.4g}")}


def freeze_depth_sweep(
    model_name: str,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    val_images: torch.Tensor,
    val_labels: torch.Tensor,
    *,
    depths: list[str] | None = None,
    device: str | None = None,
    batch_size: int = 32,
    publish=None,
) -> pd.DataFrame:
    """Validation accuracy of a linear probe on frozen pooled features, per depth.

    One row per candidate layer, in network order: ``depth`` (index among the
    body layers), ``layer``, ``position`` (share of the body's forward FLOPs
    up to that layer), ``feature_dim``, ``train_accuracy``, ``val_accuracy``,
    ``ridge_lambda``. ``publish`` hears the feature pass ("extracting") and
    the probes ("probing", one per layer).
    """
    check_images(train_images, "train_images")
    check_images(val_images, "val_images")
    train_y = check_labels(train_labels, train_images.shape[0], "train_labels")
    val_y = check_labels(val_labels, val_images.shape[0], "val_labels")
    num_classes = int(max(train_y.max(), val_y.max())) + 1
    if torch.unique(train_y).numel() < 2:
        raise ValueError("train_labels: a probe needs at least two classes in the training images")
    layers = list(depths) if depths else candidate_layers(model_name)
    lay = layout(model_name)
    index = lay.index
    unknown = [n for n in layers if n not in index]
    if unknown:
        raise ValueError(
            f"depths: {', '.join(map(repr, unknown))} not body layers of {model_name} "
            f"({lay.names[0]} ... {lay.names[-1]})"
        )
    layers = sorted(set(layers), key=index.get)
    ends = lay.ends

    both = torch.cat([train_images, val_images])
    feats = pooled_features(model_name, both, layers, batch_size=batch_size, device=device, publish=publish)
    n_train = train_images.shape[0]
    rows = []
    probes = Meter(PROBING, len(layers), "layers", publish) if publish is not None else None
    for done, name in enumerate(layers, 1):
        f = feats[name]
        probe = ridge_probe(f[:n_train], train_y, f[n_train:], val_y, num_classes)
        rows.append(
            {
                "depth": index[name],
                "layer": name,
                "position": round(float(ends[index[name]]), 4),
                "feature_dim": int(f.shape[1]),
                **probe,
            }
        )
        log.debug("sweep %s: %s", name, probe)
        if probes is not None:
            probes.update(done)
    return pd.DataFrame(rows, columns=COLUMNS)
