"""Cross-validated choice of the head, on the training rows only.

Every choice here (the linear head's ``l2``, whether a two-layer head is
worth it, its ``l2``) is made by stratified k-fold cross-validation over the
rows passed in, which are meant to be the training split: the validation rows
stay untouched for scoring the result (``selected_on="train-cv"``). Each fold
standardises on its own training part, so nothing about a held-out fold leaks
into its fit.

Along a grid of strengths the fits are warm-started from strong to weak
regularisation: the strong fits are cheap (well conditioned), and each
solution is a good start for the next, weaker one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from .folds import Split, stratified_folds
from .linear import Softmax, check_rows, gradient_tol
from .mlp import DEFAULT_MAX_ITER as MLP_MAX_ITER
from .mlp import DEFAULT_TOL as MLP_TOL
from .mlp import TwoLayer, initial_weights
from .space import Design

# Nine strengths, 0.75 decades apart, 1e-5 .. 10 (l2 = 1 / (C n): C from
# about 300 down to 3e-4 at n = 320). After standardisation every feature has
# unit variance, but how many features carry the signal, and how noisy they
# are, varies between networks and depths (64 to 2048 channels); the wide grid
# lets nearly separable problems pick weak strengths and noisy ones strong.
DEFAULT_L2_GRID = tuple(10.0 ** (-5 + 0.75 * k) for k in range(9))
# Cross-validation scores held-out accuracy and log-loss, which settle before the
# probabilities agree to 1e-4, so its tolerance is ten times looser than a final
# fit's: on 320 x 1280 features, 10 folds, the table at 1e-3 equals the one at
# 1e-4 (log-loss to 1e-3) in 58% of the time; at 1e-2 accuracies moved 0.3 points.
CV_RTOL = 1e-3
# Iterations per strength along a fold's path (the final refit keeps its 2,000). On
# nearly separable rows the weak strengths need thousands of iterations to meet the
# gradient test while their held-out scores stopped moving long before: 1,000 x 1,024
# random-network features, 12 classes, 10 folds took 80 s at 2,000 (most weak fits
# unconverged even so); at 300 the table had the same accuracies, log-losses within
# 2e-4 and the same chosen strength in 22 s; at 100 the chosen strength moved. On
# pretrained EfficientNet-Lite0 features of figure 11's benchmarks the fits converge
# in at most 155 iterations (mean over folds, the weakest strength), under the cap.
CV_MAX_ITER = 300

Folds = int | Sequence[Split]
# Called before the first and after each fold's path with (paths done, paths in this table): progress, and a
# place to stop (it may raise), since a cross-validation can run for minutes.
Tick = Callable[[int, int], None]
FoldResult = tuple[float, float, int, bool]  # held-out accuracy, held-out log-loss, iterations, converged


def resolve_folds(y: torch.Tensor, folds: Folds, repeats: int = 1, seed: int = 0) -> list[Split]:
    """An int means :func:`.folds.stratified_folds` of ``y``; a list of (train, held-out) index pairs is used as is."""
    if isinstance(folds, int):
        return stratified_folds(y, folds, repeats, seed)
    splits = [(torch.as_tensor(a).long(), torch.as_tensor(b).long()) for a, b in folds]
    if not splits:
        raise ValueError("folds: no splits given")
    return splits


def score(logits: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(accuracy, mean log-loss) of logits against labels."""
    logp = torch.log_softmax(logits.double(), dim=1)
    return float((logits.argmax(1) == y).double().mean()), float(-logp.gather(1, y[:, None]).mean())


def standard_error(per_fold: torch.Tensor) -> float:
    """Standard deviation over the folds over the square root of their number; NaN for one fold."""
    return float(per_fold.std() / math.sqrt(per_fold.numel())) if per_fold.numel() > 1 else float("nan")


def summarise(head: str, hidden: int, l2: float, results: Sequence[FoldResult]) -> dict:
    """One CV table row from per-fold (accuracy, log-loss, iterations, converged).

    ``accuracy_se`` is the standard deviation of the fold accuracies over the
    square root of their number. Repeated folds reuse the same rows, so this
    understates the uncertainty somewhat; it is the customary figure, and the
    one :mod:`.select`'s one-standard-error rule is phrased in.
    """
    acc = torch.tensor([r[0] for r in results], dtype=torch.float64)
    se = standard_error(acc)
    return {
        "head": head,
        "hidden": hidden,
        "l2": float(l2),
        "accuracy": float(acc.mean()),
        "accuracy_se": se,
        "log_loss": sum(r[1] for r in results) / len(results),
        "fold_accuracy": tuple(float(a) for a in acc),
        "folds": acc.numel(),
        "iterations": round(sum(r[2] for r in results) / len(results)),
        "converged": all(r[3] for r in results),
    }


def cv_logistic(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    l2_grid: Sequence[float] | None = None,
    folds: Folds = 5,
    *,
    repeats: int = 1,
    seed: int = 0,
    rtol: float = CV_RTOL,
    max_iter: int = CV_MAX_ITER,
    tick: Tick | None = None,
) -> list[dict]:
    """Cross-validated softmax regression, one row per ``l2`` (strong to weak).

    Row keys: ``head`` ("linear"), ``hidden`` (0), ``l2``, ``accuracy`` (mean
    held-out-fold accuracy), ``accuracy_se``, ``log_loss`` (mean held-out
    log-loss), ``fold_accuracy`` (per fold, in split order), ``folds`` (how
    many), ``iterations`` (mean per fold), ``converged`` (on every fold).
    """
    y = check_rows(x, y, num_classes)
    grid = sorted({float(v) for v in (l2_grid or DEFAULT_L2_GRID)}, reverse=True)
    if grid[-1] <= 0:
        raise ValueError("l2_grid: strengths must be positive")
    splits = resolve_folds(y, folds, repeats, seed)
    per_fold = ticked([lambda s=s: linear_path(x, y, num_classes, grid, s, rtol=rtol, max_iter=max_iter)
                       for s in splits], tick)
    return table("linear", 0, grid, per_fold)


def ticked(paths: Sequence[Callable[[], list[FoldResult]]], tick: Tick | None) -> list[list[FoldResult]]:
    """Run each fold's path in order, ticking before the first and after each."""
    out = []
    if tick is not None:
        tick(0, len(paths))
    for path in paths:
        out.append(path())
        if tick is not None:
            tick(len(out), len(paths))
    return out


def table(head: str, hidden: int, grid: Sequence[float], per_fold: Sequence[Sequence[FoldResult]]) -> list[dict]:
    """Rows, one per strength, from per-fold results along the same grid."""
    return [summarise(head, hidden, l2, [fold[j] for fold in per_fold]) for j, l2 in enumerate(grid)]


def linear_path(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, grid: Sequence[float], split: Split, *,
    rtol: float = CV_RTOL, max_iter: int = CV_MAX_ITER,
) -> list[FoldResult]:
    """One fold: the softmax head along ``grid`` (strong to weak, warm-started), scored on the held-out rows."""
    train, held = split
    design = Design.of(x[train])
    problem = Softmax(design.z, y[train], num_classes)
    z_held, y_held = design.coords(x[held]), y[held]
    out, start = [], None
    for l2 in grid:
        m = problem.solve(l2, start, max_iter=max_iter, tol=gradient_tol(l2, rtol))
        start = m.x
        weight, bias = problem.full(m.x)
        out.append((*score(z_held @ weight.T + bias, y_held), m.iterations, m.converged))
    return out


def cv_mlp(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    hidden: int,
    l2_grid: Sequence[float],
    folds: Folds = 5,
    *,
    repeats: int = 1,
    seed: int = 0,
    max_iter: int = MLP_MAX_ITER,
    tol: float = MLP_TOL,
) -> list[dict]:
    """Cross-validated two-layer head, one row per ``l2`` (strong to weak, warm-started); keys as
    :func:`cv_logistic`'s, with ``head`` "mlp" and ``hidden`` H. Every fold starts from the same seed."""
    y = check_rows(x, y, num_classes)
    grid = sorted({float(v) for v in l2_grid}, reverse=True)
    per_fold = [mlp_path(x, y, num_classes, hidden, grid, split, seed=seed, max_iter=max_iter, tol=tol)
                for split in resolve_folds(y, folds, repeats, seed)]
    return table("mlp", hidden, grid, per_fold)


def mlp_path(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, hidden: int, grid: Sequence[float], split: Split, *,
    seed: int = 0, max_iter: int = MLP_MAX_ITER, tol: float = MLP_TOL, dtype: torch.dtype = torch.float32,
) -> list[FoldResult]:
    """One fold: the two-layer head along ``grid`` from the seeded start, scored on the held-out rows."""
    train, held = split
    design = Design.of(x[train], dtype)
    problem = TwoLayer(design.z, y[train], num_classes, hidden)
    z_held, y_held = design.coords(x[held]), y[held]
    start, out = initial_weights(design, num_classes, hidden, seed), []
    for l2 in grid:
        m = problem.solve(l2, start, max_iter=max_iter, tol=tol)
        start = m.x
        first, second = problem.unpack(m.x)
        act = torch.relu(z_held @ first[:, :-1].T + first[:, -1])
        out.append((*score(act @ second[:, :-1].T + second[:, -1], y_held), m.iterations, m.converged))
    return out
