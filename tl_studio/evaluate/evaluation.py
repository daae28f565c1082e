"""Evaluating a trained run: predictions on a set of images, and every metric from them.

The images are the run's own validation files (listed in its config.json, so
an evaluation still works after the upload session that trained it is gone,
as long as the files are) or any dataset whose class names the run knows.
Inference goes through the same decode, resize and normalisation as
training; the metrics are then plain functions of the predictions
(:mod:`.metrics`), so what a table shows can always be traced to the images
behind it (:func:`confusion_cell`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .. import runs
from ..data import Dataset, DatasetError, ImageStore, load_dataset
from ..data.summary import skipped_frame
from ..errors import InputError
from ..predict import run_predictor
from ..progress import PREDICTING, Meter
from . import metrics

log = logging.getLogger(__name__)

VALIDATION = "validation split stored in config.json"


class EvaluationError(InputError, ValueError):
    """The run or the data cannot be evaluated; the message names the file or field."""


@dataclass
class Evaluation:
    """Predictions of one run on one set of images, and the metrics derived from them."""

    run_dir: Path
    info: runs.RunInfo
    classes: list[str]
    source: str  # VALIDATION, or the dataset path given
    paths: list[Path]
    y_true: np.ndarray  # (N,) class indices
    probs: np.ndarray  # (N, classes) softmax probabilities
    skipped: pd.DataFrame = field(default_factory=lambda: skipped_frame([]))  # file, reason
    top_k: int = 3
    bins: int = 10

    def __post_init__(self):
        self.y_true = np.asarray(self.y_true, dtype=np.int64)
        self.probs = np.asarray(self.probs, dtype=np.float64).reshape(len(self.y_true), len(self.classes))
        self.y_pred = self.probs.argmax(axis=1) if len(self.probs) else np.zeros(0, dtype=np.int64)
        c = self.classes
        self.accuracy = metrics.accuracy(self.y_true, self.y_pred)
        ks = range(1, max(1, min(self.top_k, len(c))) + 1)
        self.top_k_accuracy = metrics.top_k_accuracy(self.probs, self.y_true, ks)
        self.confusion = metrics.confusion(self.y_true, self.y_pred, c)
        self.confusion_normalized = metrics.normalize_rows(self.confusion)
        self.per_class = metrics.per_class_from_confusion(self.confusion)
        self.ece, self.reliability = metrics.calibration(self.probs, self.y_true, self.bins)
        rows = np.arange(len(self.y_true))
        self.predictions = pd.DataFrame(
            {
                "path": [str(p) for p in self.paths],
                "true": [c[i] for i in self.y_true],
                "predicted": [c[i] for i in self.y_pred],
                "probability": self.probs[rows, self.y_pred] if len(rows) else np.zeros(0),
                "p_true": self.probs[rows, self.y_true] if len(rows) else np.zeros(0),
                "correct": self.y_true == self.y_pred,
            }
        )

    # ---- derived views --------------------------------------------------------------
    @property
    def n(self) -> int:
        return len(self.y_true)

    @property
    def macro_f1(self) -> float:
        present = self.per_class[self.per_class["support"] > 0]
        return float(present["f1"].mean()) if len(present) else float("nan")

    @property
    def accuracy_interval(self) -> tuple[float, float]:
        """95% Wilson interval of the accuracy: how much a small set can tell."""
        return metrics.wilson_interval(int((self.y_true == self.y_pred).sum()), self.n)

    def mistakes(self, n: int = 12) -> pd.DataFrame:
        """The ``n`` most confidently wrong predictions, most confident first."""
        wrong = self.predictions[~self.predictions["correct"]]
        wrong = wrong.sort_values("probability", ascending=False, kind="stable")
        return wrong[["path", "true", "predicted", "probability"]].head(n).reset_index(drop=True)

    def summary(self) -> dict:
        """The headline numbers as plain JSON-ready data."""
        lo, hi = self.accuracy_interval
        return {
            "run": str(self.run_dir),
            "model": self.info.plan.model,
            "data": self.source,
            "images": self.n,
            "skipped": len(self.skipped),
            "accuracy": self.accuracy,
            "accuracy_95ci": [lo, hi],
            "top_k": {str(k): v for k, v in self.top_k_accuracy.items()},
            "macro_f1": self.macro_f1,
            "ece": self.ece,
        }

    def figures(self) -> dict:
        """Fresh matplotlib Figures (a UI may close the ones it is given)."""
        from . import figures

        tables = runs.read_tables(self.run_dir)
        return {
            "confusion": figures.confusion_figure(self.confusion, normalized=False),
            "confusion_normalized": figures.confusion_figure(self.confusion_normalized, normalized=True),
            "reliability": figures.reliability_figure(self.reliability, self.ece),
            "per_class": figures.per_class_figure(self.per_class),
            "curves": figures.curves_figure(tables["epochs"], title=self.run_dir.name),
        }


def _class_index(ev: Evaluation, name, field_name: str) -> int:
    if isinstance(name, (int, np.integer)) and not isinstance(name, bool):
        if 0 <= name < len(ev.classes):
            return int(name)
        raise ValueError(f"{field_name}: class index {name} is out of range (0..{len(ev.classes) - 1})")
    try:
        return ev.classes.index(name)
    except ValueError:
        raise ValueError(f"{field_name}: unknown class {name!r}; classes are {', '.join(ev.classes)}") from None


def confusion_cell(ev: Evaluation, true_class, predicted_class) -> pd.DataFrame:
    """Exactly the images counted in one confusion-matrix cell (path, probability), most confident first."""
    t = _class_index(ev, true_class, "true_class")
    p = _class_index(ev, predicted_class, "predicted_class")
    sel = (ev.y_true == t) & (ev.y_pred == p)
    cell = ev.predictions.loc[sel, ["path", "probability"]]
    return cell.sort_values("probability", ascending=False, kind="stable").reset_index(drop=True)


# ---- building an evaluation ---------------------------------------------------------
def _stored_validation(info: runs.RunInfo) -> Dataset:
    """The run's validation files, rebuilt from config.json (missing ones reported)."""
    cfg = info.path / runs.CONFIG
    ds = info.config.get("dataset") or {}
    root, files, val_rels = ds.get("root"), ds.get("files"), ds.get("val_rels")
    if not root or not isinstance(files, list) or not isinstance(val_rels, list):
        raise EvaluationError(f"{cfg}: dataset.root/files/val_rels missing; evaluate on a dataset with data=PATH")
    if not val_rels:
        raise EvaluationError(f"{cfg}: the run has no validation files; evaluate on a dataset with data=PATH")
    wanted = set(val_rels)
    # Only the validation files are checked: re-hashing the training set would be wasted work.
    val_files = [f for f in files if isinstance(f, (list, tuple)) and len(f) >= 2 and f[0] in wanted]
    try:
        return Dataset.from_files(root, val_files, info.classes, [], val_rels)
    except DatasetError as exc:
        raise EvaluationError(
            f"{cfg}: cannot use the stored validation files ({exc}); evaluate on a dataset with data=PATH"
        ) from None


def _given_dataset(path, classes: list[str]) -> tuple[Dataset, list[int]]:
    """Every image of a dataset, labels mapped by class name onto the run's classes."""
    try:
        ds = load_dataset(path, val_fraction=0.0)
    except DatasetError as exc:
        raise EvaluationError(str(exc)) from None
    unknown = [c for c in ds.classes if c not in classes]
    if unknown:
        raise EvaluationError(
            f"{path}: class(es) {', '.join(map(repr, unknown))} are not among the run's classes "
            f"({', '.join(classes)}); class folders must use the run's class names"
        )
    missing = [c for c in classes if c not in ds.classes]
    if missing:
        log.info("%s: no images of class(es) %s; their recall is 0 with support 0", path, ", ".join(missing))
    remap = [classes.index(c) for c in ds.classes]
    return ds, remap


def evaluate_run(
    run_dir: str | Path,
    *,
    data: str | Path | None = None,
    top_k: int = 3,
    device: str = "cpu",
    batch_size: int = 64,
    bins: int = 10,
    publish=None,
    check_stop=None,
) -> Evaluation:
    """Predict every image of the run's validation files (or of ``data``) and measure.

    ``publish`` hears "predicting" :class:`~tl_studio.progress.Progress` events; ``check_stop()``
    runs before every batch and may raise to stop.

    Raises :class:`tl_studio.train.runs.RunError` for a broken run directory
    and :class:`EvaluationError` when the images cannot be used.
    """
    run_dir = Path(run_dir)
    if not (run_dir / runs.CONFIG).is_file():
        raise runs.RunError(f"{run_dir}: not a run directory (no {runs.CONFIG})")
    if not isinstance(top_k, int) or top_k < 1:
        raise EvaluationError(f"top_k: must be a positive integer, got {top_k!r}")
    predictor = run_predictor(run_dir, device)
    info = runs.load_run(run_dir)
    classes = predictor.classes
    info.classes = classes
    if data is None:
        ds = _stored_validation(info)
        items = [ds.items[i] for i in ds.val_idx]
        y = [it.label for it in items]
        source = VALIDATION
    else:
        ds, remap = _given_dataset(data, classes)
        items = list(ds.items)
        y = [remap[it.label] for it in items]
        source = str(data)
    skipped = list(ds.summary.skipped.itertuples(index=False, name=None))
    if not items:
        raise EvaluationError(f"{source}: no usable images to evaluate")

    store = ImageStore([it.path for it in items], predictor.preprocess)
    probs = np.zeros((len(items), len(classes)), dtype=np.float64)
    meter = Meter(PREDICTING, len(items), "images", publish) if publish is not None else None
    done = 0
    for batch, idx in store.batches(range(len(items)), batch_size, shuffle=False):
        if check_stop is not None:
            check_stop()
        probs[idx.numpy()] = predictor.probabilities(batch).to(torch.float64).numpy()
        done += len(idx)
        if meter is not None:
            meter.update(done)
    # A file that fails to decode now (changed since import) is left out, not predicted blank.
    bad = set(store.errors)
    skipped += [(items[i].rel, reason) for i, reason in sorted(store.errors.items())]
    keep = [i for i in range(len(items)) if i not in bad]
    if not keep:
        raise EvaluationError(f"{source}: none of the {len(items)} images could be decoded")
    ev = Evaluation(
        run_dir=run_dir,
        info=info,
        classes=classes,
        source=source,
        paths=[items[i].path for i in keep],
        y_true=np.array([y[i] for i in keep]),
        probs=probs[keep],
        skipped=skipped_frame(skipped),
        top_k=top_k,
        bins=bins,
    )
    log.info(
        "%s: %d images (%d skipped), accuracy %.3f, ECE %.3f", run_dir, ev.n, len(ev.skipped), ev.accuracy, ev.ece
    )
    return ev
