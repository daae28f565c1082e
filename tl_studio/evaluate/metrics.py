"""Classification metrics computed from predictions: plain functions of arrays.

Each function takes what a prediction run produces (true class indices,
predicted indices or class probabilities, the class names) and returns
pandas objects, so the same code serves an evaluation, a test's hand-made
case and a notebook. Conventions follow scikit-learn where it has one: a
ratio whose denominator is zero (precision of a class never predicted,
recall of a class with no examples) is 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _indices(y, n_classes: int, name: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of class indices, got shape {y.shape}")
    if y.size and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"{name}: class indices must be integers in [0, {n_classes})")
    return y.astype(np.int64)


def _probabilities(probs, y_true) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"probs: expected (N, classes), got shape {p.shape}")
    y = _indices(y_true, p.shape[1], "y_true")
    if len(y) != len(p):
        raise ValueError(f"probs has {len(p)} rows but y_true has {len(y)} labels")
    return p, y


def confusion(y_true, y_pred, classes: list[str]) -> pd.DataFrame:
    """Counts: row = true class, column = predicted class."""
    c = len(classes)
    t = _indices(y_true, c, "y_true")
    p = _indices(y_pred, c, "y_pred")
    if len(t) != len(p):
        raise ValueError(f"y_true has {len(t)} labels but y_pred has {len(p)}")
    counts = np.bincount(t * c + p, minlength=c * c).reshape(c, c)
    return pd.DataFrame(
        counts,
        index=pd.Index(classes, name="true"),
        columns=pd.Index(classes, name="predicted"),
    )


def normalize_rows(cm: pd.DataFrame) -> pd.DataFrame:
    """Each row divided by its total (the class's recall on the diagonal); empty rows stay 0."""
    totals = cm.sum(axis=1).to_numpy(dtype=np.float64)
    values = np.divide(
        cm.to_numpy(dtype=np.float64), totals[:, None], out=np.zeros(cm.shape), where=totals[:, None] > 0
    )
    return pd.DataFrame(values, index=cm.index, columns=cm.columns)


def per_class_from_confusion(cm: pd.DataFrame) -> pd.DataFrame:
    """Precision, recall, F1 and support per class from a confusion matrix of counts."""
    m = cm.to_numpy(dtype=np.float64)
    tp = np.diag(m)
    predicted = m.sum(axis=0)
    support = m.sum(axis=1)

    def ratio(num, den):
        return np.divide(num, den, out=np.zeros_like(num), where=den > 0)

    precision = ratio(tp, predicted)
    recall = ratio(tp, support)
    f1 = ratio(2 * precision * recall, precision + recall)
    return pd.DataFrame(
        {
            "class": list(cm.index),
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": support.astype(np.int64),
        }
    )


def per_class(y_true, y_pred, classes: list[str]) -> pd.DataFrame:
    return per_class_from_confusion(confusion(y_true, y_pred, classes))


def accuracy(y_true, y_pred) -> float:
    t, p = np.asarray(y_true), np.asarray(y_pred)
    return float((t == p).mean()) if len(t) else float("nan")


def top_k_accuracy(probs, y_true, ks) -> dict[int, float]:
    """Share of images whose true class is among the k most probable, for each k.

    A true class tied with others counts as ranked first among them: its rank
    is the number of classes with a strictly higher probability.
    """
    p, y = _probabilities(probs, y_true)
    if not len(y):
        return {int(k): float("nan") for k in ks}
    p_true = p[np.arange(len(y)), y]
    rank = (p > p_true[:, None]).sum(axis=1)
    return {int(k): float((rank < k).mean()) for k in ks}


def calibration(probs, y_true, bins: int = 10) -> tuple[float, pd.DataFrame]:
    """Expected calibration error and the reliability table.

    Confidence is the top probability. Bins split [0, 1] into ``bins`` equal
    intervals, each (lower, upper] except the first, which includes 0. ECE is
    the bin-size-weighted mean of |accuracy - confidence|. Empty bins are kept
    (count 0, confidence and accuracy NaN) so a diagram shows every bin.
    """
    if bins < 1:
        raise ValueError(f"bins: must be at least 1, got {bins}")
    p, y = _probabilities(probs, y_true)
    conf = p.max(axis=1) if len(p) else np.zeros(0)
    correct = (p.argmax(axis=1) == y).astype(np.float64) if len(p) else np.zeros(0)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # (lower, upper]: searchsorted(side="left") puts a value equal to an edge in the bin below it
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        sel = which == b
        n = int(sel.sum())
        c = float(conf[sel].mean()) if n else float("nan")
        a = float(correct[sel].mean()) if n else float("nan")
        if n:
            ece += n / len(conf) * abs(a - c)
        rows.append({"bin": b, "lower": edges[b], "upper": edges[b + 1], "confidence": c, "accuracy": a, "count": n})
    return (float(ece) if len(conf) else float("nan")), pd.DataFrame(rows)


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a proportion: honest error bars for a small validation set."""
    if n <= 0:
        return float("nan"), float("nan")
    phat = successes / n
    den = 1 + z * z / n
    centre = (phat + z * z / (2 * n)) / den
    half = z * np.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n)) / den
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))
