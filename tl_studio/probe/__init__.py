"""Heads fitted to convergence on cached frozen features, chosen by cross-validation on the training rows.

The linear-probe protocol of CLIP-style evaluations: when a head's inputs are
cached features, the head is a convex problem and is solved, not trained for
a few hundred SGD steps.

* :func:`fit_logistic`: multinomial logistic regression by full-batch L-BFGS,
  ``mean CE + (l2 / 2) ||W||^2`` on standardised features, folded back to raw
  features (``l2 = 1 / (C n)`` for scikit-learn's ``C``).
* :func:`fit_mlp`: Linear -> ReLU -> Linear, the same way (not convex).
* :func:`stratified_folds`, :func:`cv_logistic`, :func:`cv_mlp`: repeated
  stratified k-fold cross-validation along warm-started strength paths.
* :func:`select_head`: the linear head's strength by CV, a two-layer head only
  when it beats it by more than one standard error, refitted, as a state dict
  for the engine's head.
* :func:`ridge_cv`: a closed-form cross-validated ridge classifier, cheap
  enough to score every candidate layer of a freeze-depth sweep.

Call it single-threaded (:func:`single_threaded`): its products are small,
and on a busy 2-core machine a second thread made it 30x slower.

Imports torch only (and the standard library); scikit-learn is the tests'
reference, not a dependency.
"""

from .cv import DEFAULT_L2_GRID, cv_logistic, cv_mlp
from .folds import stratified_folds
from .linear import LogisticFit, fit_logistic
from .mlp import MLPFit, fit_mlp
from .ridge import RidgeCV, ridge_cv
from .select import MLP_L2_GRID, HeadChoice, fit_head, head_state_dict, select_head
from .threads import single_threaded

__all__ = [
    "DEFAULT_L2_GRID",
    "MLP_L2_GRID",
    "HeadChoice",
    "LogisticFit",
    "MLPFit",
    "RidgeCV",
    "cv_logistic",
    "cv_mlp",
    "fit_head",
    "fit_logistic",
    "fit_mlp",
    "head_state_dict",
    "ridge_cv",
    "select_head",
    "single_threaded",
    "stratified_folds",
]
