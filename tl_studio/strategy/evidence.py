"""The evidence pass: how much of the network transfers to these images, measured on the training split.

From one :class:`~tl_studio.features.FeatureSet` (one pass of the frozen
network over the data) and the training rows only:

* **the probe curve**: at every body layer, a cross-validated ridge
  classifier on the layer's pooled features (repeated stratified k-fold,
  :func:`tl_studio.probe.ridge_cv`): mean held-out accuracy and its standard
  error. Where it peaks says which features transfer;
* **the head's input, hence the cut and the taps**: every single layer, and
  every pair and triple of the best-probing layers (the source's second
  approach, features from several layers), scored the same way; among those
  within one standard error of the best, the cheapest: the one whose deepest
  layer is earliest (least compute), then the one reading fewer layers.
  Differences inside the fold noise are no reason to pay for more. The cut
  is the deepest layer read; the taps are the layers read, when several;
* **the head**: linear or two layers, and its L2 strength, by
  cross-validation (:func:`tl_studio.probe.select_head`);
* **the similarity** to ImageNet and LogME transferability, from the same
  pass (:func:`.similarity.similarity_report`).

The validation split is never read here: it is touched once, by training,
to report the model that was chosen.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass
from typing import Callable

import pandas as pd
import torch

from ..features import FeatureSet, evidence_rows
from ..features.heads import head_on
from ..layout import layout
from ..probe import ridge_cv, single_threaded, stratified_folds
from ..progress import Progress, fold_ticks
from . import rules
from .similarity import SimilarityReport, similarity_report
from .sweep import candidate_layers

log = logging.getLogger(__name__)

FOLDS, REPEATS = 5, 2
# Head inputs of two or three layers are tried among this many best-probing layers.
TOP_LAYERS = 4


@dataclass(frozen=True)
class ProbePoint:
    layer: str
    index: int  # among the body layers
    position: float  # share of the body's forward FLOPs done up to and including this layer
    feature_dim: int
    accuracy: float  # mean held-out-fold accuracy of the ridge probe (training split only)
    se: float  # its standard error across folds and repeats


@dataclass(frozen=True)
class Evidence:
    model: str
    key: str  # of the feature set it was measured on
    fingerprint: str  # of the dataset (not of the sample, when it read one)
    num_classes: int
    train_rows: int  # the training images probed
    seed: int
    folds: int
    repeats: int
    curve: tuple[ProbePoint, ...]
    best: str  # the layer that probes best
    cut: str  # the cheapest layer within one standard error of the best
    keep_all: bool  # the cut is the network's last feature layer: nothing is removed
    taps: tuple[str, ...]  # () or the layers the head reads (the cut's included), network order
    taps_accuracy: float
    head_hidden: int  # 0: a linear head
    head_l2: float
    head_accuracy: float
    head_se: float
    head_reason: str
    similarity: SimilarityReport
    seconds: float  # this pass's own time (the feature set's is apart)
    selected_on: str = "train-cv"
    # The training images in all, when the evidence read a stratified sample of them (features/sample.py);
    # 0: it read them all.
    sampled_from: int = 0

    @property
    def training_images(self) -> int:
        """The training split it was measured on, in images (a sample of it may have been read)."""
        return self.sampled_from or self.train_rows

    def point(self, layer: str) -> ProbePoint:
        return next(p for p in self.curve if p.layer == layer)

    @property
    def final(self) -> ProbePoint:
        return self.curve[-1]

    def frame(self) -> pd.DataFrame:
        """The curve as a table (one row per probed layer, in network order)."""
        df = pd.DataFrame([p.__dict__ for p in self.curve])
        df["low"], df["high"] = df["accuracy"] - df["se"], df["accuracy"] + df["se"]
        return df

    def within_noise(self, layer: str) -> bool:
        best = self.point(self.best)
        return self.point(layer).accuracy >= best.accuracy - best.se

    def words(self) -> str:
        """The evidence in a sentence or two, for rationales."""
        best, cut, final = self.point(self.best), self.point(self.cut), self.final
        parts = [f"{cut.layer} probes at {cut.accuracy:.2f} ± {cut.se:.2f}"]
        if best.layer != cut.layer:
            parts.append(f"the best, {best.layer}, at {best.accuracy:.2f}: within noise, so the cheaper one is kept")
        if final.layer not in (cut.layer, best.layer):
            parts.append(f"the final layer ({final.layer}) at {final.accuracy:.2f}")
        kept = "nothing is cut" if self.keep_all else f"kept up to {self.cut}"
        read = (f"a stratified sample of {self.train_rows} of your {self.sampled_from} training images"
                if self.sampled_from else "your training images")
        return (f"Evidence from {read} ({self.folds}-fold cross-validation, {self.repeats} repeats): "
                + "; ".join(parts) + f"; {kept}.")

    def to_dict(self) -> dict:
        return {
            "model": self.model, "features_key": self.key, "fingerprint": self.fingerprint,
            "num_classes": self.num_classes, "train_rows": self.train_rows, "seed": self.seed,
            "folds": self.folds, "repeats": self.repeats, "selected_on": self.selected_on,
            "curve": [dict(p.__dict__) for p in self.curve], "best": self.best, "cut": self.cut,
            "keep_all": self.keep_all, "taps": list(self.taps), "taps_accuracy": self.taps_accuracy,
            "head": {"hidden": self.head_hidden, "l2": self.head_l2, "cv_accuracy": self.head_accuracy,
                     "cv_se": self.head_se, "reason": self.head_reason},
            "similarity": self.similarity.to_dict(), "seconds": round(self.seconds, 3),
            "sampled_from": self.sampled_from,
        }


def _cost(layers: tuple[int, ...]) -> tuple[int, int]:
    """What a head input costs: the deepest layer it needs (compute), then how many layers it reads."""
    return max(layers), len(layers)


Scored = tuple[float, float, tuple[int, ...], float, float]  # accuracy, its SE, layer indices, error, its SE


def pick_within_noise(scored: list[Scored]) -> Scored:
    """The cheapest candidate whose accuracy is within one standard error of the best.

    Differences inside the fold noise are no reason to pay for more layers.
    When the best accuracy is the same on every fold (perfect, typically: easy
    data), accuracy has saturated: its standard error of 0 measures no noise,
    and every layer that is also perfect would tie, so the cheapest, often a
    very early layer, would win on no evidence (the demo: blocks.1, 0.925 on
    the validation images against 1.000 for the final layer). There the held-out
    squared error of the same probes, a finer score that does not saturate,
    decides instead: the cheapest candidate within one of its standard errors
    of the lowest, among those at the best accuracy.
    """
    best = max(scored, key=lambda c: c[0])
    within = [c for c in scored if c[0] >= best[0] - best[1]]
    if not best[1] > 0 and len(within) > 1:  # 0 (or NaN: one fold): no spread, saturated
        low = min(within, key=lambda c: c[3])
        within = [c for c in within if c[3] <= low[3] + (low[4] if low[4] == low[4] else 0.0)]
    return min(within, key=lambda c: (_cost(c[2]), -c[0]))


def gather_evidence(
    fs: FeatureSet,
    labels,
    train_idx: list[int],
    num_classes: int,
    *,
    seed: int = 0,
    hidden: int = rules.HIDDEN_UNITS,
    check_stop: Callable[[], None] | None = None,
    publish: Callable[[Progress], None] | None = None,
    sampled_from: int = 0,
    fingerprint: str | None = None,
) -> Evidence:
    """The probe curve, the cut, the taps, the head and the similarity, from the training rows only.

    When ``fs`` is of a sample of the training images: ``sampled_from``, how many there are in all, and
    ``fingerprint``, the dataset's (the evidence is of the dataset; ``fs`` has the sample's own).
    """
    started = time.perf_counter()
    lay = layout(fs.model)
    labels = torch.as_tensor(labels, dtype=torch.long)
    rows = torch.as_tensor(sorted(train_idx), dtype=torch.long)
    y = labels[rows]
    if torch.unique(y).numel() < 2:
        raise ValueError("the training images hold one class; the evidence needs two or more")
    splits = stratified_folds(y, FOLDS, REPEATS, seed)
    names = candidate_layers(fs.model, count=len(lay.names))

    def probe(layers: tuple[str, ...]):
        if check_stop is not None:
            check_stop()
        return ridge_cv(fs.x(list(layers), rows), y, num_classes, splits)

    with single_threaded():  # small products: a second thread costs more than it gives
        curve, singles = [], []
        for name in names:
            r = probe((name,))
            singles.append(r)
            curve.append(ProbePoint(name, lay.index[name], round(lay.ends[lay.index[name]], 4), fs.width(name),
                                    r.accuracy, r.accuracy_se))
        # Head inputs from several layers (features from several depths): every pair and triple of
        # the best-probing layers, scored the same way; each costs its deepest layer.
        # (Equal accuracies, as when several layers are perfect on every fold: the lower held-out error first.)
        top = [p for p, _ in sorted(zip(curve, singles), key=lambda c: (-c[1].accuracy, c[1].error))][:TOP_LAYERS]
        scored = [(r.accuracy, r.accuracy_se, (p.index,), r.error, r.error_se) for p, r in zip(curve, singles)]
        for k in (2, 3):
            for combo in itertools.combinations(sorted(p.index for p in top), k):
                r = probe(tuple(lay.names[i] for i in combo))
                scored.append((r.accuracy, r.accuracy_se, combo, r.error, r.error_se))
        chosen_acc, _, chosen, _, _ = pick_within_noise(scored)
    best = max(zip(curve, singles), key=lambda c: (c[1].accuracy, -c[1].error))[0]  # ties: the lower error
    cut = next(p for p in curve if p.index == max(chosen))
    taps = tuple(lay.names[i] for i in chosen) if len(chosen) > 1 else ()
    taps_acc = chosen_acc
    if check_stop is not None:
        check_stop()
    head = head_on(fs, list(taps or (cut.layer,)), rows.tolist(), labels, num_classes, hidden=hidden, decide=True,
                   folds=FOLDS, repeats=REPEATS, seed=seed, tick=fold_ticks(publish, check_stop))
    sim = similarity_report(fs.model, fs.logits.index_select(0, rows), fs.penultimate.index_select(0, rows).float(),
                            fs.bn_kl, y)
    ev = Evidence(
        model=fs.model, key=fs.key, fingerprint=fingerprint or fs.fingerprint, num_classes=num_classes, train_rows=len(rows),
        seed=seed, folds=FOLDS, repeats=REPEATS, curve=tuple(curve), best=best.layer, cut=cut.layer,
        keep_all=cut.layer == curve[-1].layer, taps=taps, taps_accuracy=taps_acc, head_hidden=head.hidden,
        head_l2=head.l2, head_accuracy=head.cv_accuracy, head_se=head.cv_se, head_reason=head.reason,
        similarity=sim, seconds=time.perf_counter() - started, sampled_from=sampled_from,
    )
    log.info("evidence: best %s %.3f, cut %s %.3f, taps %s, head %s (%.1f s)", best.layer, best.accuracy,
             cut.layer, cut.accuracy, ",".join(taps) or "-", head.reason, ev.seconds)
    return ev


# Measured on a 2-core CPU: ridge probes over every layer, the pairs and triples, and the head's
# cross-validation (linear, and a two-layer head tried) come to about this much per training image.
PROBE_SECONDS_PER_TRAIN_IMAGE = 0.02


def estimate_seconds(model_name: str, images: int, train_images: int, device: str | None = None) -> float:
    """About how long the evidence pass takes: one forward pass over ``images``, then the probes.

    From the same FLOPs-and-measured-rates model as the training estimate (timing.py), plus a
    per-training-image allowance for the probes; decoding and cache hits are not in it.
    """
    from . import timing

    forward = sum(timing.layer_seconds(model_name, device))
    return forward * images + PROBE_SECONDS_PER_TRAIN_IMAGE * train_images


def scope(dataset) -> tuple[int, int, str]:
    """What the evidence pass reads of ``dataset``: (images through the network, training images probed,
    the same in words), said before it starts. Past the small-data bound: a sample (features/sample.py)."""
    rows = evidence_rows(dataset.labels, dataset.train_idx)
    if rows is None:
        n, m = len(dataset.paths), len(dataset.train_idx)
        return n, m, f"the {n} images once, then probes every layer on the {m} training images"
    n = len(rows)
    return n, n, (f"a stratified sample of {n} of the {len(dataset.train_idx)} training images once (past "
                  f"{rules.SMALL_DATA} per class the body trains, and the evidence reads at most half of each "
                  f"class), then probes every layer on them")
