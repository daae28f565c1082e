"""Multinomial logistic regression on frozen features, fitted to convergence.

Objective, on standardised features ``xs``::

    mean_i CE(softmax(W xs_i + b), y_i) + (l2 / 2) * ||W||^2        (b not penalised)

scikit-learn's ``LogisticRegression`` minimises ``C * sum_i CE_i + ||W||^2 / 2``,
the same problem scaled by ``1 / (C n)``, so ``l2 = 1 / (C * n)`` with ``n`` the
number of training rows (``C = 1 / (l2 * n)``). For two classes scikit-learn
fits one weight vector with the binary loss instead of two softmax rows; the
same classifier then needs ``C = 2 / (l2 * n)``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from .lbfgs import Minimum, minimise
from .space import Design

log = logging.getLogger(__name__)

DEFAULT_MAX_ITER = 2000
# The default gradient tolerance follows the strength: the objective is
# l2-strongly convex, so ||W - W*|| <= ||gradient|| / l2, and a fixed tolerance
# is loose at weak l2 (1e-6 leaves probabilities 0.17 off at l2=1e-5) and
# needlessly tight at moderate l2. Above l2 = 1 the weights themselves shrink
# like 1 / l2, so the tolerance stops growing there. max |gradient| <=
# 1e-4 * min(l2, 1) puts the fitted probabilities within 7e-4 of scikit-learn
# converged to tol=1e-12 over l2 = 1e-5 .. 10 (320 x 1280, 10 classes; 160 x 400,
# 4 classes). At tol=1e-8 scikit-learn itself is up to 3.5e-3 from there at l2=1e-5.
RTOL = 1e-4
MIN_TOL = 1e-12  # below what float64 gradients of these objectives resolve


def gradient_tol(l2: float, rtol: float = RTOL) -> float:
    """The default convergence tolerance on max |gradient| for strength ``l2``."""
    return max(rtol * min(l2, 1.0), MIN_TOL)


@dataclass(frozen=True)
class LogisticFit:
    """A softmax head that applies to raw features: ``logits = x @ weight.T + bias`` (float64)."""

    weight: torch.Tensor  # (K, D)
    bias: torch.Tensor  # (K,)
    l2: float
    iterations: int
    converged: bool
    loss: float  # the objective above at the solution (standardised features)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return x.double() @ self.weight.T + self.bias

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(x), dim=1)


class Softmax:
    """Softmax regression on one set of training rows, solved for as many strengths as asked.

    Classes that ``y`` lacks are left out of the fit (an unpenalised bias would
    run to minus infinity) and get zero weights and a bias ``log(n)`` below the
    lowest fitted one: finite, so a later fine-tuning can still move it.
    """

    def __init__(self, z: torch.Tensor, y: torch.Tensor, num_classes: int):
        n, r = z.shape
        self.present = torch.unique(y)
        if self.present.numel() < 2:
            raise ValueError("a softmax head needs at least two classes among the training rows")
        self.num_classes = num_classes
        remap = torch.full((num_classes,), -1, dtype=torch.long)
        remap[self.present] = torch.arange(self.present.numel())
        self.k = self.present.numel()
        self.y = remap[y]
        self.za = torch.cat([z, torch.ones(n, 1, dtype=z.dtype)], dim=1)  # bias as a last column of ones
        self.onehot = torch.nn.functional.one_hot(self.y, self.k).to(z.dtype)
        self.n, self.r = n, r

    def objective(self, l2: float):
        za, onehot, n, r, k = self.za, self.onehot, self.n, self.r, self.k

        def f(flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            theta = flat.view(k, r + 1)
            logits = za @ theta.T
            lse = torch.logsumexp(logits, dim=1, keepdim=True)
            w = theta[:, :r]
            value = (lse.sum() - (logits * onehot).sum()) / n + 0.5 * l2 * (w * w).sum()
            resid = (torch.exp(logits - lse) - onehot) / n
            grad = resid.T @ za
            grad[:, :r] += l2 * w
            return value, grad.view(-1)

        return f

    def solve(self, l2: float, start: torch.Tensor | None, *, max_iter: int, tol: float) -> Minimum:
        """``start``: (k, r + 1) for the present classes, e.g. the previous solution on a path."""
        x0 = torch.zeros(self.k * (self.r + 1), dtype=self.za.dtype) if start is None else start.reshape(-1)
        return minimise(self.objective(l2), x0, max_iter=max_iter, tol=tol)

    def theta(self, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """All-class (K, r), (K,) weights -> the (k, r + 1) start of the present classes."""
        return torch.cat([weight[self.present], bias[self.present, None]], dim=1).to(self.za.dtype)

    def full(self, solution: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A solution -> (K, r) weight and (K,) bias over all classes."""
        theta = solution.view(self.k, self.r + 1)
        weight = torch.zeros(self.num_classes, self.r, dtype=theta.dtype)
        floor = float(theta[:, self.r].min()) - math.log(self.n)
        bias = torch.full((self.num_classes,), floor, dtype=theta.dtype)
        weight[self.present] = theta[:, : self.r]
        bias[self.present] = theta[:, self.r]
        return weight, bias


def check_rows(x: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Validate features and labels; returns the labels as int64."""
    if x.ndim != 2:
        raise ValueError(f"features: expected (rows, features), got shape {tuple(x.shape)}")
    y = torch.as_tensor(y).long().reshape(-1)
    if y.numel() != x.shape[0]:
        raise ValueError(f"labels: {y.numel()} labels for {x.shape[0]} feature rows")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"labels: values must lie in 0..{num_classes - 1}")
    if not torch.isfinite(x).all():
        raise ValueError("features: contain NaN or infinite values")
    return y


def fit_logistic(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    l2: float,
    *,
    init: LogisticFit | None = None,
    max_iter: int = DEFAULT_MAX_ITER,
    tol: float | None = None,
    dtype: torch.dtype = torch.float64,
) -> LogisticFit:
    """Full-batch L-BFGS softmax regression on (x, y), standardised on these rows, folded back.

    ``init``: a previous fit (e.g. at a stronger ``l2``) to start from; it is
    mapped into this fit's standardised coordinates. ``tol`` bounds the largest
    absolute gradient entry of the objective (module docstring) at the solution;
    None means :func:`gradient_tol` (``1e-4 * min(l2, 1)``). float64 is the default
    because float32 cannot resolve the gradients that tolerance asks for: it
    stalls with probabilities up to 0.17 off at l2=1e-4, for a 1.5x speed-up.
    """
    if l2 <= 0:
        raise ValueError(f"l2 must be positive, got {l2}")
    tol = gradient_tol(l2) if tol is None else tol
    y = check_rows(x, y, num_classes)
    design = Design.of(x, dtype)
    problem = Softmax(design.z, y, num_classes)
    start = None
    if init is not None:
        if tuple(init.weight.shape) != (num_classes, x.shape[1]):
            raise ValueError(f"init: weight of shape {tuple(init.weight.shape)}, expected "
                             f"({num_classes}, {x.shape[1]}) for these features and classes")
        start = problem.theta(*design.start(init.weight, init.bias))
    m = problem.solve(l2, start, max_iter=max_iter, tol=tol)
    if not m.converged:
        log.warning("fit_logistic: l2=%.3g stopped after %d iterations, max |gradient| %.2g > tol %.2g",
                    l2, m.iterations, m.grad_max, tol)
    weight, bias = design.finish(*problem.full(m.x))
    return LogisticFit(weight, bias, float(l2), m.iterations, m.converged, m.loss)
