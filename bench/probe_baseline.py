"""The baseline the default must beat: a tuned linear probe on frozen pooled features.

``python -m bench.probe_baseline DATA [--model efficientnet_lite0] [--json OUT.json]``

What a practitioner writes in ten lines of scikit-learn: decode the images
at the model's preprocessing, take the frozen network's globally pooled
features, standardise them, and fit a multinomial logistic regression
(lbfgs) whose C is chosen by stratified 3-fold cross-validation on the
TRAINING split only; score it once on the validation split. The baseline
uses the final pooled features (the classifier's input); the same probe
also runs on every body layer, which shows how much a shallower layer could
give.

Two "best layer" figures are reported: the best by validation accuracy
(an oracle, as in the issue's "a probe at a middle layer scores 0.90-0.95")
and the layer a practitioner would pick without looking at the validation
split (the best cross-validation score on the training split).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger("bench.probe")

MODEL = "efficientnet_lite0"
# log-spaced C: standardised features of a few hundred images want strong
# regularisation (C ~ 1e-3..1e-1), so the grid reaches well below 1.
C_GRID = tuple(float(c) for c in np.logspace(-4, 2, 13))
FOLDS = 3


@dataclass
class Decoded:
    """A dataset at the model's input size: uint8 (N, 3, S, S), labels and the folder split."""

    images: object  # torch.Tensor
    labels: np.ndarray
    train_idx: list[int]
    val_idx: list[int]
    classes: list[str]
    seconds: float


@dataclass
class Probe:
    layer: str
    width: int
    val_accuracy: float
    cv_accuracy: float  # mean over the folds at the chosen C, on the training split
    train_accuracy: float
    C: float
    fit_seconds: float


def decode(data: str | Path, model: str = MODEL) -> Decoded:
    """Decode every image once at the model's own preprocessing (as ``tl-studio train`` does)."""
    from tl_studio.data import load_dataset
    from tl_studio.train import data_from_dataset

    t = time.perf_counter()
    ds = load_dataset(data)
    d = data_from_dataset(ds, model)
    return Decoded(d.images.tensor, d.labels.numpy(), list(d.train_idx), list(d.val_idx), list(d.classes),
                   time.perf_counter() - t)


def features(d: Decoded, layers: list[str], model: str = MODEL) -> tuple[dict[str, np.ndarray], float]:
    """Pooled features of ``layers`` from one frozen forward pass; returns them and the seconds taken."""
    from tl_studio.strategy.features import pooled_features

    t = time.perf_counter()
    got = pooled_features(model, d.images, layers)
    return {k: v.numpy() for k, v in got.items()}, time.perf_counter() - t


def fit_probe(x_train: np.ndarray, y_train: np.ndarray, *, folds: int = FOLDS, seed: int = 0,
              cs: tuple[float, ...] = C_GRID):
    """Standardise, then logistic regression with C chosen by stratified k-fold CV; returns (model, C, cv acc).

    The scaler is fitted inside each fold, so the CV score is honest; the
    final model is refitted on the whole training split at the chosen C.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    # lbfgs on more than two classes minimises the multinomial (softmax) loss
    pipe = make_pipeline(StandardScaler(), LogisticRegression(solver="lbfgs", max_iter=3000))
    search = GridSearchCV(pipe, {"logisticregression__C": list(cs)}, cv=cv, scoring="accuracy", refit=True)
    search.fit(x_train, y_train)
    return search.best_estimator_, float(search.best_params_["logisticregression__C"]), float(search.best_score_)


def probe_layer(name: str, x: np.ndarray, d: Decoded) -> Probe:
    t = time.perf_counter()
    xtr, ytr = x[d.train_idx], d.labels[d.train_idx]
    clf, c, cv_acc = fit_probe(xtr, ytr)
    val = float((clf.predict(x[d.val_idx]) == d.labels[d.val_idx]).mean()) if d.val_idx else float("nan")
    train = float((clf.predict(xtr) == ytr).mean())
    return Probe(name, int(x.shape[1]), val, cv_acc, train, c, time.perf_counter() - t)


def run(data: str | Path, model: str = MODEL, layers: list[str] | None = None) -> dict:
    """Baseline (final pooled features) and per-layer probes on one dataset; a JSON-ready dict."""
    from tl_studio.surgery import body_layer_names

    body = body_layer_names(model)
    layers = list(layers or body)
    final = body[-1]
    if final not in layers:
        layers.append(final)
    d = decode(data, model)
    if not d.val_idx:
        raise ValueError(f"{data}: no validation images; the probe is scored on the val/ split")
    feats, t_feat = features(d, layers, model)
    probes = [probe_layer(name, feats[name], d) for name in layers]
    by_name = {p.layer: p for p in probes}
    base = by_name[final]
    best_val = max(probes, key=lambda p: (p.val_accuracy, p.cv_accuracy))
    best_cv = max(probes, key=lambda p: (p.cv_accuracy, -layers.index(p.layer)))  # ties: the shallower
    fits = sum(p.fit_seconds for p in probes)
    return {
        "data": str(data),
        "model": model,
        "classes": len(d.classes),
        "train_images": len(d.train_idx),
        "val_images": len(d.val_idx),
        "image_size": int(d.images.shape[-1]),
        "seconds": {"decode": d.seconds, "features_all_layers": t_feat, "fits_all_layers": fits},
        "baseline": {**asdict(base), "seconds_to_model": d.seconds + t_feat + base.fit_seconds},
        # an oracle: chosen by validation accuracy
        "best_layer": {**asdict(best_val), "seconds_to_model": d.seconds + t_feat + fits},
        # what one could pick without the validation split
        "cv_chosen_layer": {**asdict(best_cv), "seconds_to_model": d.seconds + t_feat + fits},
        "layers": [asdict(p) for p in probes],
    }


def table(result: dict) -> str:
    lines = [f"{'layer':<10} {'width':>5} {'val acc':>7} {'cv acc':>6} {'train':>5} {'C':>8}"]
    for p in result["layers"]:
        mark = " <- baseline" if p["layer"] == result["baseline"]["layer"] else ""
        mark += " <- best (val)" if p["layer"] == result["best_layer"]["layer"] else ""
        mark += " <- best (cv)" if p["layer"] == result["cv_chosen_layer"]["layer"] else ""
        lines.append(f"{p['layer']:<10} {p['width']:>5} {p['val_accuracy']:>7.3f} {p['cv_accuracy']:>6.3f} "
                     f"{p['train_accuracy']:>5.2f} {p['C']:>8.2g}{mark}")
    s = result["seconds"]
    b, m = result["baseline"], result["best_layer"]
    lines.append(
        f"{result['classes']} classes, {result['train_images']} train / {result['val_images']} val images; "
        f"decode {s['decode']:.1f} s, features {s['features_all_layers']:.1f} s, fits {s['fits_all_layers']:.1f} s")
    lines.append(f"baseline ({b['layer']}) {b['val_accuracy']:.3f}; best layer {m['layer']} {m['val_accuracy']:.3f} "
                 f"({m['val_accuracy'] - b['val_accuracy']:+.3f}); cv-chosen {result['cv_chosen_layer']['layer']} "
                 f"{result['cv_chosen_layer']['val_accuracy']:.3f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.probe_baseline", description=__doc__.split("\n\n")[0])
    p.add_argument("data", help="dataset folder with train/ and val/")
    p.add_argument("--model", default=MODEL)
    p.add_argument("--layers", default=None, help="comma-separated body layers (default: every one)")
    p.add_argument("--json", default=None, help="also write the result here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    logging.getLogger("tl_studio").setLevel(logging.WARNING)
    layers = [s.strip() for s in args.layers.split(",") if s.strip()] if args.layers else None
    result = run(args.data, args.model, layers)
    print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"written: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
