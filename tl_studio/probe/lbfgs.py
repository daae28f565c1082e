"""A small full-batch L-BFGS for smooth objectives that return their own gradient.

``torch.optim.LBFGS`` needs parameters with ``.grad`` and a closure, and its
strong-Wolfe search costs extra evaluations. The probe's objectives (softmax
regression, a two-layer head) are cheap, analytic and evaluated thousands of
times in a cross-validation, so the per-iteration overhead is what counts:

* one iteration is one evaluation when the unit step is accepted (Armijo
  backtracking, the common case for L-BFGS on these problems);
* the inverse-Hessian product uses the compact representation of Byrd,
  Nocedal and Schnabel (1994): two passes over the stored pairs an
  iteration, where the two-loop recursion makes four, in 4m small operations
  (see ``History``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

# A flat parameter vector -> (objective value, gradient of the same shape).
Objective = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

ARMIJO = 1e-4  # sufficient-decrease constant, the usual choice
WOLFE = 0.9  # curvature constant of the approximate Wolfe test (see _backtrack)
# How far f may rise, in units of round-off, under that test: a sum of many terms
# carries a round-off of many units (1e-14 on a 50-dimensional quadratic of size 6).
NOISE = 1000
MAX_BACKTRACKS = 40
# Relative decrease of f below which it has stopped moving: a few units of round-off.
# The solver gives up after STALL_PATIENCE iterations in a row in which neither f
# decreased by more than that nor max |g| reached a new low. (scipy's ftol, 64 eps
# once, stopped a condition-180 quadratic at max |g| 7e-7 of an asked 1e-8: the
# gradient still resolves progress that f, at its round-off floor, no longer shows.)
STALL_PATIENCE = 5
STALL = {torch.float64: 4 * torch.finfo(torch.float64).eps, torch.float32: torch.finfo(torch.float32).eps}


@dataclass(frozen=True)
class Minimum:
    """Where the solver stopped. ``converged``: the gradient criterion was met."""

    x: torch.Tensor
    loss: float
    grad_max: float
    iterations: int
    converged: bool


class History:
    """The last ``m`` curvature pairs (s, y) and the inverse-Hessian estimate they define.

    For a large parameter vector the cost is memory traffic over the pairs,
    not arithmetic, so each iteration reads them twice only: once for their
    products with the new pair (which also update the cached products with
    the gradient, since ``g_new = g + y``) and once to combine them into the
    direction. Pairs live in one (2m, p) buffer, S over Y, written round-robin.
    """

    def __init__(self, size: int, p: int, dtype: torch.dtype):
        self.pairs = torch.zeros(2 * size, p, dtype=dtype)  # rows: s_0 .. s_m-1, y_0 .. y_m-1
        self.sy = torch.zeros(size, size, dtype=torch.float64)  # s_i . y_j
        self.yy = torch.zeros(size, size, dtype=torch.float64)  # y_i . y_j
        self.grad = torch.zeros(2 * size, dtype=torch.float64)  # s_i . g, y_i . g for the current g
        self.order: list[int] = []  # slots, oldest first
        self.size = size

    def __len__(self) -> int:
        return len(self.order)

    def clear(self) -> None:
        self.order.clear()

    def update(self, s: torch.Tensor, y: torch.Tensor, g_new: torch.Tensor, keep: bool) -> None:
        """Move to the new gradient ``g_new = g + y`` and, if ``keep``, store the pair (s, y)."""
        m = self.size
        prod = (self.pairs @ torch.stack([s, y], dim=1)).double()  # (2m, 2)
        self.grad += prod[:, 1]
        if not keep:
            return
        # Slots fill 0, 1, ... (also after a clear), then the oldest is overwritten.
        slot = self.order.pop(0) if len(self.order) == m else len(self.order)
        self.order.append(slot)
        self.pairs[slot], self.pairs[m + slot] = s, y
        self.sy[slot, :], self.sy[:, slot] = prod[m:, 0], prod[:m, 1]
        self.yy[slot, :] = self.yy[:, slot] = prod[m:, 1]
        sy, yy = float(s @ y), float(y @ y)
        self.sy[slot, slot], self.yy[slot, slot] = sy, yy
        self.grad[slot], self.grad[m + slot] = float(s @ g_new), float(y @ g_new)

    def direction(self, g: torch.Tensor) -> torch.Tensor:
        """-H g, with H = gamma I + [S, gamma Y] M [S, gamma Y]^T (Byrd, Nocedal, Schnabel 1994, eq. 3.13)."""
        if not self.order:
            return -g
        m = self.size
        idx = torch.tensor(self.order)
        sy, yy = self.sy[idx][:, idx], self.yy[idx][:, idx]
        a, b = self.grad[idx], self.grad[m + idx]
        gamma = float(sy[-1, -1] / yy[-1, -1])
        r = torch.triu(sy)
        u = torch.linalg.solve_triangular(r, a[:, None], upper=True)[:, 0]
        rhs = torch.diagonal(sy) * u + gamma * (yy @ u) - gamma * b
        top = torch.linalg.solve_triangular(r.T, rhs[:, None], upper=False)[:, 0]
        coef = torch.zeros(2 * m, dtype=torch.float64)
        coef[idx], coef[m + idx] = top, -gamma * u
        return -(gamma * g + coef.to(g.dtype) @ self.pairs)


def minimise(fun: Objective, x0: torch.Tensor, *, max_iter: int, tol: float, history: int = 10) -> Minimum:
    """Minimise ``fun`` from ``x0`` until max |gradient| <= ``tol`` (scipy's ``gtol``, sklearn's ``tol``).

    Stops early, unconverged, when the objective has not decreased in its
    last significant digits for ``STALL_PATIENCE`` iterations (the tolerance is
    then below what the dtype resolves), or when the line search fails.
    """
    x = x0.detach().clone()
    f, g = fun(x)
    memory = History(history, x.numel(), x.dtype)
    stall = STALL.get(x.dtype, 64 * torch.finfo(x.dtype).eps)
    flat = 0  # consecutive iterations without progress in f or in the gradient
    best_g = float("inf")
    it = 0
    for it in range(max_iter + 1):
        gmax = float(g.abs().max())
        if gmax <= tol:
            return Minimum(x, float(f), gmax, it, True)
        flat = 0 if gmax < best_g else flat
        best_g = min(best_g, gmax)
        if flat >= STALL_PATIENCE:
            break
        if it == max_iter:
            break
        d = memory.direction(g)
        gtd = float(g @ d)
        if gtd >= 0:  # lost descent (round-off on a flat objective): restart from steepest descent
            memory.clear()
            d, gtd = -g, -float(g @ g)
        # The first step has no curvature estimate; keep it at unit length in the inf-norm sense.
        step = 1.0 if len(memory) else min(1.0, 1.0 / max(float(g.abs().sum()), 1e-12))
        found = _backtrack(fun, x, float(f), d, gtd, step)
        if found is None:
            log.debug("line search failed at iteration %d (max |g| %.3g)", it, gmax)
            break
        x_new, f_new, g_new = found
        s, y = x_new - x, g_new - g
        # Keep only pairs with positive curvature (always, when convex).
        memory.update(s, y, g_new, keep=float(s @ y) > 1e-10 * float(y @ y))
        decrease = float(f) - float(f_new)
        x, f, g = x_new, f_new, g_new
        flat = flat + 1 if decrease <= stall * max(abs(float(f)), 1.0) else 0
    return Minimum(x, float(f), float(g.abs().max()), it, False)


def _backtrack(fun: Objective, x: torch.Tensor, f: float, d: torch.Tensor, gtd: float, step: float):
    """Armijo backtracking with quadratic interpolation; None when no step is acceptable.

    Near the minimum the Armijo test compares differences of f below its
    round-off, and fails at random. There a step is also accepted when f has
    not risen beyond round-off and the slope along ``d`` has shrunk (Hager and
    Zhang's approximate Wolfe conditions), which the gradient resolves well
    below the precision of f.
    """
    noise = NOISE * torch.finfo(x.dtype).eps * max(abs(f), 1.0)
    for _ in range(MAX_BACKTRACKS):
        x_new = x + step * d
        f_new, g_new = fun(x_new)
        fn = float(f_new)
        if fn <= f + ARMIJO * step * gtd:
            return x_new, f_new, g_new
        if fn <= f + noise and abs(float(g_new @ d)) <= WOLFE * abs(gtd):
            return x_new, f_new, g_new
        # Minimum of the quadratic through f, the slope gtd and f_new, kept within [0.1, 0.5] of the step.
        denom = 2.0 * (fn - f - gtd * step)
        trial = -gtd * step * step / denom if denom > 0 and fn == fn else 0.5 * step
        step = min(max(trial, 0.1 * step), 0.5 * step)
    return None
