"""A two-layer head, Linear(D, H) -> ReLU -> Linear(H, K), fitted full-batch by L-BFGS.

Objective, on standardised features::

    mean_i CE(softmax(W2 relu(W1 xs_i + b1) + b2), y_i) + (l2 / 2) (||W1||^2 + ||W2||^2)

Biases are not penalised. The argument of :mod:`.space` holds for ``W1`` (its
data gradient is ``delta.T @ xs``), so with D > n the first layer is solved in
the training rows' span: the (H, D) random start is projected there, which
leaves its pre-activations on the training rows unchanged, and the part of
``W1`` outside the span, which the penalty alone would shrink to zero, is
zero. That cuts the cost of one evaluation about D / n times (5x at 1280
features and 256 rows). The problem is not convex: the result depends on the
seeded start, and L-BFGS stops at a local minimum.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .lbfgs import Minimum, minimise
from .linear import check_rows
from .space import Design


DEFAULT_HIDDEN = 256
# Iterations are the cost of the two-layer comparison (1.5 ms each at 256 rows
# x 256 hidden units, float32, one core). Held-out accuracy had settled by 100
# on XOR-like data and on 1280-wide features (300 changed it by under one
# standard error); 150 leaves a margin. The same cap serves the cross-validation
# and the refit, so the CV scores the procedure that is refitted. The gradient
# criterion is rarely met by then: this is early stopping as much as L2.
DEFAULT_MAX_ITER = 150
DEFAULT_TOL = 1e-5  # max |gradient|; near what float32 resolves in this objective
# L-BFGS memory: the (m, p) curvature buffers are read several times an
# iteration, which at p = 68k parameters costs as much as the objective; 5
# pairs reached the same loss and held-out accuracy as 10 at half the cost.
HISTORY = 5


@dataclass(frozen=True)
class MLPFit:
    """A two-layer head on raw features (float64): ``fc(relu(fc1(x)))``."""

    fc1_weight: torch.Tensor  # (H, D)
    fc1_bias: torch.Tensor  # (H,)
    fc_weight: torch.Tensor  # (K, H)
    fc_bias: torch.Tensor  # (K,)
    l2: float
    iterations: int
    converged: bool
    loss: float

    @property
    def hidden(self) -> int:
        return self.fc1_weight.shape[0]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(x.double() @ self.fc1_weight.T + self.fc1_bias)
        return h @ self.fc_weight.T + self.fc_bias

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(x), dim=1)


class TwoLayer:
    """The two-layer objective on one set of training rows (reduced coordinates ``z``).

    All ``num_classes`` outputs are fitted: a class missing from ``y`` only
    has its output bias pushed down, slowly, and the iteration cap bounds it.
    """

    def __init__(self, z: torch.Tensor, y: torch.Tensor, num_classes: int, hidden: int):
        n, r = z.shape
        self.n, self.r, self.k, self.h = n, r, num_classes, hidden
        self.za = torch.cat([z, torch.ones(n, 1, dtype=z.dtype)], dim=1)
        self.onehot = torch.nn.functional.one_hot(y, num_classes).to(z.dtype)
        self.split = hidden * (r + 1)  # flat layout: [W1 | b1] (H, r+1), then [W2 | b2] (K, H+1)

    def unpack(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return flat[: self.split].view(self.h, self.r + 1), flat[self.split :].view(self.k, self.h + 1)

    def objective(self, l2: float):
        za, onehot, n, r, h = self.za, self.onehot, self.n, self.r, self.h

        def f(flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            first, second = self.unpack(flat)
            w1, w2, b2 = first[:, :r], second[:, :h], second[:, h]
            pre = za @ first.T
            act = torch.relu(pre)
            logits = torch.addmm(b2, act, w2.T)
            lse = torch.logsumexp(logits, dim=1, keepdim=True)
            value = (lse.sum() - (logits * onehot).sum()) / n + 0.5 * l2 * ((w1 * w1).sum() + (w2 * w2).sum())
            resid = (torch.exp(logits - lse) - onehot) / n
            g_second = torch.cat([resid.T @ act + l2 * w2, resid.sum(0)[:, None]], dim=1)
            # ReLU's backward (zero where the unit is off), as autograd computes it: one fused
            # kernel, 30x faster than masked_fill with a comparison on (256, 256).
            back = torch.ops.aten.threshold_backward(resid @ w2, act, 0.0)
            g_first = back.T @ za
            g_first[:, :r] += l2 * w1
            return value, torch.cat([g_first.view(-1), g_second.view(-1)])

        return f

    def solve(self, l2: float, start: torch.Tensor, *, max_iter: int, tol: float) -> Minimum:
        return minimise(self.objective(l2), start, max_iter=max_iter, tol=tol, history=HISTORY)


def initial_weights(design: Design, num_classes: int, hidden: int, seed: int) -> torch.Tensor:
    """nn.Linear's default start (uniform within 1/sqrt(fan_in)) drawn in the full feature space,
    then projected into the training rows' span; flat, in the TwoLayer layout."""
    gen = torch.Generator().manual_seed(int(seed))
    d = design.scaler.mean.numel()
    b1_bound, b2_bound = 1.0 / math.sqrt(d), 1.0 / math.sqrt(hidden)
    w1 = (torch.rand(hidden, d, generator=gen, dtype=torch.float64) * 2 - 1) * b1_bound
    b1 = (torch.rand(hidden, generator=gen, dtype=torch.float64) * 2 - 1) * b1_bound
    w2 = (torch.rand(num_classes, hidden, generator=gen, dtype=torch.float64) * 2 - 1) * b2_bound
    b2 = (torch.rand(num_classes, generator=gen, dtype=torch.float64) * 2 - 1) * b2_bound
    first = torch.cat([design.space.project(w1), b1[:, None]], dim=1)
    second = torch.cat([w2, b2[:, None]], dim=1)
    return torch.cat([first.reshape(-1), second.reshape(-1)]).to(design.z.dtype)


def fit_mlp(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    hidden: int,
    l2: float,
    *,
    seed: int = 0,
    warm_path: Sequence[float] = (),
    max_iter: int = DEFAULT_MAX_ITER,
    tol: float = DEFAULT_TOL,
    dtype: torch.dtype = torch.float32,
) -> MLPFit:
    """Fit the two-layer head on (x, y), standardised on these rows; the standardisation is folded into fc1.

    ``warm_path``: stronger strengths to pass through first, each fit starting
    from the previous one's solution, as the cross-validation does along its
    grid (a non-convex fit depends on its start, so a refit of a CV choice
    follows the same path). ``iterations`` counts the whole path.

    float32 by default: a local minimum of a non-convex fit has no 1e-4
    agreement to protect, and float32 took a quarter of float64's time (one
    fit at 320 x 1280, 256 units: 0.4 against 1.8 s) for the same held-out accuracy.
    """
    if hidden < 1:
        raise ValueError(f"hidden must be at least 1, got {hidden}")
    if l2 <= 0:
        raise ValueError(f"l2 must be positive, got {l2}")
    y = check_rows(x, y, num_classes)
    design = Design.of(x, dtype)
    problem = TwoLayer(design.z, y, num_classes, hidden)
    start, iterations = initial_weights(design, num_classes, hidden, seed), 0
    for strength in (*warm_path, l2):
        m = problem.solve(strength, start, max_iter=max_iter, tol=tol)
        start, iterations = m.x, iterations + m.iterations
    first, second = problem.unpack(m.x)
    w1, b1 = design.finish(first[:, : problem.r], first[:, problem.r])
    return MLPFit(w1, b1, second[:, : problem.h].double(), second[:, problem.h].double(), float(l2),
                  iterations, m.converged, m.loss)
