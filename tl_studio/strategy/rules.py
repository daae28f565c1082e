"""The source text's four cases as smooth rules over (dataset size, similarity).

The tutorial names four corners (DESIGN.md, "The four cases"):

=========  ====================================  =========================================
data       similar to ImageNet                   different from ImageNet
=========  ====================================  =========================================
small      new FC head, all else frozen, no cut  cut most layers from the end, keep the
                                                 low-level ones frozen, add new layers;
                                                 sometimes then train the whole network
large      new last layer, train everything      new last layer, nothing frozen
=========  ====================================  =========================================

Between the corners three numbers move smoothly; all are *depth fractions*:
the share of the body's forward FLOPs computed up to a layer (from the layer
table), so the same rule means the same thing for a ResNet, an EfficientNet
or a ViT whatever their layer counts.

* ``keep`` (K): the body up to this depth is kept; the rest is cut.
* ``freeze`` (F): the body up to this depth is frozen (F <= K always).
* ``taps``: for small data with middling similarity, the head also reads
  pooled features of earlier layers (the text's second approach).

The source's flower example ("similar species: freeze fewer layers") is a slip
that contradicts its own rule and four cases; DESIGN.md says to treat similar
data as "reuse more, so freeze more", as here.
"""

from __future__ import annotations

import math

# ---- the two axes -------------------------------------------------------------
# Data size is read on a log scale of images per class between these two:
# at or below SMALL_DATA only new layers train (the small corners exactly);
# linear probes on frozen ImageNet features are the strong baseline there and
# fine-tuning millions of weights on ~100 images per class overfits.
SMALL_DATA = 100
# At or above LARGE_DATA nothing is frozen (the large corners exactly): about
# ImageNet's own ~1,300 images per class, the regime the weights were trained in.
LARGE_DATA = 1000
# Where "small" turns "large" (the case name). From here on only the
# classifier is replaced: no cut, no taps, a single new FC layer. Roughly the
# geometric middle: below it, cutting or tapping still beats training depth.
CASE_SPLIT_DATA = 300

# Similarity in [0, 1]: 0 unrelated to ImageNet photos, 1 the same kind of images.
# At or above SIMILAR the case is "similar": the high-level features transfer,
# so nothing is cut.
SIMILAR = 0.5
# At or below UNRELATED the high-level features are useless (the text's
# "people detector -> cars"): with small data the cut is at its earliest.
UNRELATED = 0.2

# ---- the cut ------------------------------------------------------------------
# Small and different keeps this share of the body (by forward FLOPs): the
# low-level layers (edges, colours, textures), "removing most layers from the
# end". 0.45 keeps stem..layer2.0 of a ResNet-18 and stem..blocks.7 of
# EfficientNet-Lite0 (up to the 14x14 stage): mid-level, resolution-rich maps.
KEEP_DIFFERENT = 0.45

# ---- freezing -----------------------------------------------------------------
# The data score (0 at SMALL_DATA, 1 at LARGE_DATA) at which freezing has
# fallen to nothing: 1 for similar data (the pretrained layers are worth
# keeping until the data can retrain them all), DIFFERENT_UNFREEZE_AT for
# unrelated data (its high-level features help nobody, so let the layers adapt
# as soon as there is data to adapt them: about CASE_SPLIT_DATA images).
DIFFERENT_UNFREEZE_AT = 0.5

# ---- taps (the text's second approach) ------------------------------------------
# Small data whose similarity is neither clearly high nor clearly low: the
# last layer alone may be too specific, the early ones too generic, so the
# head reads pooled features of several depths (cheap: all frozen, cached).
TAP_SIMILARITY = (UNRELATED, 0.7)
# Where the extra taps sit, as shares of the kept depth.
TAP_POSITIONS = (0.5, 0.75)

# ---- the new head -----------------------------------------------------------------
# After a cut the kept features are low- and mid-level: one hidden layer lets
# the head combine them ("add new layers"). Elsewhere a single FC layer.
HIDDEN_UNITS = 256
HEAD_DROPOUT = 0.2


def data_score(images_per_class: float) -> float:
    """0 at or below SMALL_DATA, 1 at or above LARGE_DATA, log-linear between."""
    n = max(float(images_per_class), 1e-9)
    t = math.log(n / SMALL_DATA) / math.log(LARGE_DATA / SMALL_DATA)
    return min(max(t, 0.0), 1.0)


def case_of(images_per_class: float, similarity: float) -> str:
    size = "large" if images_per_class >= CASE_SPLIT_DATA else "small"
    kind = "similar" if similarity >= SIMILAR else "different"
    return f"{size}_{kind}"


def keep_at_least(similarity: float) -> float:
    """The kept depth with the least data (K0): KEEP_DIFFERENT when unrelated, all when similar."""
    s = min(max(similarity, 0.0), 1.0)
    t = min(max((s - UNRELATED) / (SIMILAR - UNRELATED), 0.0), 1.0)
    return KEEP_DIFFERENT + (1.0 - KEEP_DIFFERENT) * t


def keep_depth(images_per_class: float, similarity: float) -> float:
    """K: the depth fraction kept; 1.0 means no cut.

    Only small data is cut. The cut moves earlier only as similarity falls,
    and recedes (smoothly, reaching "no cut" at CASE_SPLIT_DATA) as data grows.
    """
    d, split = data_score(images_per_class), data_score(CASE_SPLIT_DATA)
    k0 = keep_at_least(similarity)
    return 1.0 - (1.0 - k0) * min(max(1.0 - d / split, 0.0), 1.0)


def freeze_depth(images_per_class: float, similarity: float) -> float:
    """F: the depth fraction frozen (of the whole body; F <= K).

    With the least data everything kept is frozen (F = K0). Freezing recedes
    as data grows and is gone at LARGE_DATA for similar data, earlier for
    different data; at a fixed size it never rises as similarity falls.
    """
    s = min(max(similarity, 0.0), 1.0)
    d = data_score(images_per_class)
    gone_at = DIFFERENT_UNFREEZE_AT + (1.0 - DIFFERENT_UNFREEZE_AT) * s
    return keep_at_least(s) * min(max(1.0 - d / gone_at, 0.0), 1.0)


def wants_taps(images_per_class: float, similarity: float) -> bool:
    lo, hi = TAP_SIMILARITY
    return images_per_class <= SMALL_DATA and lo < similarity < hi
