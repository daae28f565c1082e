"""Strategy: the source text's four cases as a recommender, measured similarity, a freeze-depth sweep.

* :func:`recommend`: dataset size x similarity x model -> a complete layer plan
  with hyper-parameters, a time estimate and a rationale (pure Python).
* :func:`measure_similarity`: how much the images look like ImageNet, from
  the pretrained network itself, with LogME transferability beside it.
* :func:`freeze_depth_sweep`: a linear probe on pooled frozen features at
  several depths: how much of the network transfers to these images.
"""

from .recommend import CASES, Recommendation, recommend
from .similarity import SimilarityReport, measure_similarity
from .sweep import freeze_depth_sweep

__all__ = [
    "CASES",
    "Recommendation",
    "SimilarityReport",
    "freeze_depth_sweep",
    "measure_similarity",
    "recommend",
]
