"""Strategy: the four cases as a prior, the evidence measured on the data, and the plan from both.

* :func:`recommend_for_data`: the recommendation for a dataset, one function
  for the CLI and the UI: one pass of the frozen network (cached), the
  evidence on the training split, then :func:`recommend`;
* :func:`recommend`: dataset size x similarity x model (x evidence) -> a
  complete layer plan with hyper-parameters, a time estimate and a rationale;
* :func:`gather_evidence`: the probe curve, the cut, the taps, the head and
  the similarity, by cross-validation on the training split;
* :func:`measure_similarity`: how much images look like ImageNet, with LogME
  transferability beside it;
* :func:`freeze_depth_sweep`: a linear probe per depth scored on a held-out
  set (a diagnostic; the recommendation uses the cross-validated curve).
"""

from .evidence import Evidence, gather_evidence
from .on_dataset import Measured, recommend_for_data
from .recommend import CASES, Recommendation, recommend
from .similarity import SimilarityReport, measure_similarity
from .sweep import freeze_depth_sweep

__all__ = [
    "CASES",
    "Evidence",
    "Measured",
    "Recommendation",
    "SimilarityReport",
    "freeze_depth_sweep",
    "gather_evidence",
    "measure_similarity",
    "recommend",
    "recommend_for_data",
]
