"""One pass of the frozen pretrained network per (model, weights, preprocessing, data), kept and reused.

* :func:`features_for`: the :class:`FeatureSet` of a dataset's images, from
  the store (memory, then disk) or computed by one pass and stored;
* :class:`FeatureSet`: every body layer's pooled output, the ImageNet logits
  and BatchNorm statistics, for every image;
* :class:`FeatureStore`: the cache folder (``tl-studio cache ls|clear``);
* :mod:`.sample`: which training images the evidence reads (a stratified
  sample past the small-data bound);
* :mod:`.fold`: the BatchNorm-folded inference copy the pass (and the
  trainer's frozen prefix) runs through.
"""

from __future__ import annotations

import logging
from typing import Callable

from ..progress import Progress
from .featureset import FeatureSet, feature_key
from .sample import Rows, evidence_rows, sample_fingerprint
from .store import FeatureStore

log = logging.getLogger(__name__)

__all__ = ["FeatureSet", "FeatureStore", "evidence_rows", "feature_key", "features_for", "sample_fingerprint"]


def features_for(
    model_name: str,
    images,
    fingerprint: str,
    *,
    store: FeatureStore | None = None,
    device=None,
    pretrained: bool = True,
    publish: Callable[[Progress], None] | None = None,
    check_stop: Callable[[], None] | None = None,
    share=None,
    rows: list[int] | None = None,
    known: tuple[list[int], FeatureSet] | None = None,
) -> FeatureSet:
    """The feature set of ``images`` (an ImageStore of the dataset with this ``fingerprint``).

    ``rows``: of those images only (a sample, :mod:`.sample`): the set's row i is image ``rows[i]``,
    stored under the sample's own key. ``known``: (rows, their feature set), passed already (the
    evidence's sample): a pass then runs over the other images only.

    ``share``: under torchrun, the ranks' split of the pass (train/distributed.py); they run it together
    unless every rank has the set already, and only a store that writes (rank 0's) keeps it on disk.
    """
    from .extract import extract

    if rows is not None:
        images, fingerprint = Rows(images, rows), sample_fingerprint(fingerprint, rows)
    store = store or FeatureStore()
    key = feature_key(model_name, fingerprint, pretrained=pretrained)
    found = store.get(key)
    if found is not None and found.rows != len(images):
        found = None
    if share is not None and not share.everyone(found is not None):
        found = None  # another rank (another machine's cache) misses it: the pass is run together
    if found is not None:
        log.info("features: %s for %d images from the cache", model_name, found.rows)
        return found
    if share is not None and not share.everyone(known is not None):
        known = None  # the ranks' rows must agree: all complete the same sample, or none does
    fs = extract(model_name, images, fingerprint, device=device, pretrained=pretrained, publish=publish,
                 check_stop=check_stop, share=share, known=known)
    store.put(fs)
    return fs
