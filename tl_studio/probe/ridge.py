"""A fast cross-validated ridge classifier, for scoring many candidate layers.

Ridge regression onto one-hot labels (with an intercept) on standardised
features, the classifier scikit-learn calls ``RidgeClassifier``: for each
strength ``alpha`` it minimises ``||Y - X W - b||^2 + alpha ||W||^2`` over the
fold's training rows and predicts the arg-max column. (scikit-learn regresses
onto -1/+1 instead of 0/1; with an intercept that only doubles W, so the
predictions are the same.)

Per fold, one symmetric eigendecomposition of the smaller of the two Gram
matrices (``X X^T`` when there are more features than rows, else ``X^T X``)
gives the held-out predictions for every strength in closed form::

    X_held W(alpha) = P diag(1 / (lambda + alpha)) Q

with ``P`` and ``Q`` computed once; a strength then costs one (m, r) x (r, K)
product. The strength is chosen once for the whole set of folds: the one with
the highest mean held-out accuracy (ties: the lower held-out squared error).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .cv import Folds, resolve_folds, standard_error
from .linear import check_rows
from .space import Standardiser


# Strengths relative to the mean nonzero eigenvalue of the standardised Gram
# matrix, max(n, D) for n rows and D features (its trace is n * D): half-decades
# from far below the spectrum's bulk (almost least squares) to far above it
# (almost the class means).
RELATIVE_ALPHAS = tuple(10.0 ** (e / 2) for e in range(-8, 5))


@dataclass(frozen=True)
class RidgeCV:
    """Cross-validated ridge classifier: the chosen strength and its held-out accuracy."""

    accuracy: float  # mean held-out-fold accuracy at ``alpha``
    accuracy_se: float  # its standard error across folds (and repeats)
    alpha: float  # scikit-learn RidgeClassifier's alpha, on features standardised per fold
    alphas: tuple[float, ...]  # the strengths tried, ascending
    accuracies: tuple[float, ...]  # mean held-out accuracy per strength
    fold_accuracy: tuple[float, ...]  # per fold, at ``alpha``
    # Mean held-out squared error of the one-hot predictions at ``alpha`` (a Brier-like score: it still
    # ranks probes whose held-out accuracy is perfect on every fold), and its standard error.
    error: float
    error_se: float  # NaN with one fold


def ridge_cv(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    folds: Folds = 5,
    *,
    repeats: int = 1,
    seed: int = 0,
    alphas: Sequence[float] | None = None,
) -> RidgeCV:
    """Mean held-out accuracy of a ridge classifier at its cross-validated strength.

    ``alphas`` default to :data:`RELATIVE_ALPHAS` times ``max(n, D)`` (``n``:
    rows given), so the same grid suits 24 and 2048 features.
    """
    y = check_rows(x, y, num_classes)
    n, d = x.shape
    grid = sorted(float(a) for a in alphas) if alphas else [r * max(n, d) for r in RELATIVE_ALPHAS]
    if grid[0] <= 0:
        raise ValueError("alphas: strengths must be positive")
    alpha_t = torch.tensor(grid, dtype=torch.float64)
    correct, sq_err = [], []
    for train, held in resolve_folds(y, folds, repeats, seed):
        pred = _fold_predictions(x[train], y[train], x[held], num_classes, alpha_t)  # (A, m, K)
        target = torch.nn.functional.one_hot(y[held], num_classes).double()
        correct.append((pred.argmax(2) == y[held]).double().mean(1))
        sq_err.append(((pred - target) ** 2).sum(2).mean(1))
    acc = torch.stack(correct, 1)  # (A, folds)
    err = torch.stack(sq_err, 1)  # (A, folds)
    mean_acc, mean_err = acc.mean(1), err.mean(1)
    best = max(range(len(grid)), key=lambda a: (float(mean_acc[a]), -float(mean_err[a])))
    fold_acc = acc[best]
    return RidgeCV(float(mean_acc[best]), standard_error(fold_acc), grid[best], tuple(grid),
                   tuple(float(a) for a in mean_acc), tuple(float(a) for a in fold_acc), float(mean_err[best]),
                   standard_error(err[best]))


def _fold_predictions(
    x_train: torch.Tensor, y_train: torch.Tensor, x_held: torch.Tensor, num_classes: int, alphas: torch.Tensor
) -> torch.Tensor:
    """Held-out ridge predictions (A, m, K) for every strength, from one eigendecomposition."""
    scaler = Standardiser.fit(x_train)
    xs, xh = scaler(x_train), scaler(x_held)  # xs is centred: the intercept is the label mean
    onehot = torch.nn.functional.one_hot(y_train, num_classes).double()
    y_mean = onehot.mean(0)
    yc = onehot - y_mean
    if xs.shape[1] >= xs.shape[0]:  # dual form: W = X^T (X X^T + alpha)^-1 Y
        lam, u = torch.linalg.eigh(xs @ xs.T)
        p, q = (xh @ xs.T) @ u, u.T @ yc
    else:  # primal form: W = (X^T X + alpha)^-1 X^T Y
        lam, v = torch.linalg.eigh(xs.T @ xs)
        p, q = xh @ v, v.T @ (xs.T @ yc)
    lam = lam.clamp_min(0.0)  # round-off can make zero eigenvalues slightly negative
    shrink = 1.0 / (lam[None, :] + alphas[:, None])  # (A, r)
    return torch.einsum("mr,ar,rk->amk", p, shrink, q) + y_mean
