"""The recommendation for an imported dataset: one function for the CLI and the UI alike.

``tl-studio recommend --data``, ``tl-studio train --plan auto`` and the
strategy tab all call :func:`recommend_for_data`, so the same data, split and
seed give the same plan everywhere. With evidence (the default) it runs the
frozen network once over the images (:func:`tl_studio.features.features_for`,
reused from the cache when it ran before), measures the probe curve, the
head and the similarity on the training split (:mod:`.evidence`), and
recommends from them; without, the four cases alone decide, at a neutral
similarity.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

from ..features import FeatureSet, FeatureStore, evidence_rows, features_for
from ..progress import Progress
from ..train.inputs import decode
from .evidence import Evidence, gather_evidence
from .recommend import Recommendation, recommend

log = logging.getLogger(__name__)

NEUTRAL_SIMILARITY = 0.5  # without a measurement, neither similar nor different


@dataclass
class Measured:
    recommendation: Recommendation
    # The pass the evidence read (for training to reuse): of every image, or of the sample of training
    # images (features/sample.py) that the trainer's starting head is fitted on.
    features: FeatureSet | None
    evidence: Evidence | None
    images: object  # the decoded ImageStore


def recommend_for_data(
    model_name: str,
    dataset,
    *,
    images=None,
    evidence: bool = True,
    seed: int = 0,
    second_stage: bool = False,
    store: FeatureStore | None = None,
    device: str | None = None,
    pretrained: bool = True,
    publish: Callable[[Progress], None] | None = None,
    check_stop: Callable[[], None] | None = None,
    share=None,
) -> Measured:
    """The recommendation for ``dataset`` (its split as loaded), from the evidence or the four cases alone.

    ``images``: the dataset already decoded for this model (reused, not decoded again).
    ``share``: under torchrun, the ranks' split of the frozen pass (tl_studio.features.features_for).
    """
    k = len(dataset.classes)
    if k < 2:
        raise ValueError(f"the dataset has {k} class(es); a classifier needs at least two")
    if not dataset.train_idx:
        raise ValueError("the dataset has no training images")
    per_class = len(dataset.train_idx) / k
    if not evidence:
        log.info("no evidence pass: the four cases decide, at a neutral similarity of %.1f", NEUTRAL_SIMILARITY)
        rec = recommend(model_name, per_class, NEUTRAL_SIMILARITY, k, device=device, second_stage=second_stage)
        return Measured(rec, None, None, images)
    if images is None:
        images = decode(dataset, model_name, publish=publish)  # for the training after it, too
    # Past the small-data bound, a stratified sample of the training images (features/sample.py).
    rows = evidence_rows(dataset.labels, dataset.train_idx)
    fs = features_for(model_name, images, dataset.fingerprint, store=store, device=device, pretrained=pretrained,
                      publish=publish, check_stop=check_stop, share=share, rows=rows)
    if rows is None:
        labels, train_idx, sampled_from = dataset.labels, dataset.train_idx, 0
    else:
        labels, train_idx = [dataset.labels[i] for i in rows], range(len(rows))
        sampled_from = len(dataset.train_idx)
        log.info("evidence: read a stratified sample of %d of the %d training images", len(rows), sampled_from)
    ev = gather_evidence(fs, labels, train_idx, k, seed=seed, check_stop=check_stop, publish=publish,
                         sampled_from=sampled_from, fingerprint=dataset.fingerprint)
    rec = recommend(model_name, per_class, ev.similarity.similarity, k, device=device, evidence=ev,
                    second_stage=second_stage)
    return Measured(rec, fs, ev, images)
