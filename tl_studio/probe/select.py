"""Choose and fit the head on cached features: linear by default, two layers only when it wins.

The rule, all on the same repeated stratified folds of the rows given:

1. the linear head's ``l2``: among the grid values whose mean held-out
   accuracy is within one standard error of the best one's, the one with the
   lowest mean held-out log-loss. Accuracy on a few hundred rows moves in
   steps of a fraction of a percent and plateaus as ``l2`` grows (the fit
   tends to a class-mean classifier), so the top accuracy alone often sits at
   the strong end of the grid with near-uniform probabilities; the log-loss
   picks the calibrated head among the statistically equal ones;
2. the two-layer head (``hidden`` units) is cross-validated over
   :data:`MLP_L2_GRID`, its ``l2`` picked the same way;
3. it is kept only if its mean accuracy exceeds the best linear mean accuracy
   by more than that linear row's standard error (the one-standard-error rule:
   the simpler head wins unless the difference stands out of the fold noise).
   When the linear head is already within one standard error of 100%, the
   two-layer head cannot win and is not fitted at all. The two-layer head
   costs most of the time here, so it is first screened at the strongest
   strength of its grid on the first repeat's folds, and cross-validated over
   its whole grid on every fold only if it is ahead of the linear head (the
   top-accuracy row) on those same folds; behind there, it is not kept;
4. the chosen head is refitted on all the rows given.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .cv import DEFAULT_L2_GRID, Tick, cv_logistic, mlp_path, resolve_folds, table, ticked
from .linear import LogisticFit, check_rows, fit_logistic
from .mlp import DEFAULT_HIDDEN, MLPFit, fit_mlp

log = logging.getLogger(__name__)

# Strengths for the two-layer head, strong to weak along one warm-started path:
# on standardised features 1e-2 .. 1e-3 fitted XOR-like data and 1280-wide
# pooled features alike, 1e-1 underfits, and each further value costs a full
# fit per fold (the two-layer head is most of select_head's time).
MLP_L2_GRID = (1e-2, 1e-3)


@dataclass(frozen=True)
class HeadChoice:
    """The head chosen by cross-validation on the training rows, refitted on all of them.

    ``state_dict`` (float32) loads into the engine's head built with the same
    ``hidden``: ``fc.weight`` (K, D) and ``fc.bias`` (K,) for the linear head;
    ``fc1.weight`` (H, D), ``fc1.bias`` (H,), ``fc.weight`` (K, H), ``fc.bias``
    (K,) for the two-layer one. The standardisation is folded in: they apply
    to raw features.
    """

    hidden: int  # 0: linear head
    l2: float
    cv_accuracy: float  # mean held-out-fold accuracy of the chosen head
    cv_se: float  # its standard error across folds and repeats
    cv_log_loss: float
    cv_table: tuple[dict, ...]  # every head and strength tried (rows as cv_logistic's)
    state_dict: dict[str, torch.Tensor]
    fit: LogisticFit | MLPFit  # the refit, float64, with its iterations and convergence
    reason: str  # one sentence: why this head
    rows: int
    folds: int
    repeats: int
    seed: int
    selected_on: str = "train-cv"  # every choice made by CV on the rows given, never on validation rows


def top_row(rows: Sequence[dict]) -> dict:
    """The row of highest mean accuracy (exact ties: the lower held-out log-loss)."""
    return max(rows, key=lambda r: (r["accuracy"], -r["log_loss"]))


def best_row(rows: Sequence[dict]) -> dict:
    """Lowest held-out log-loss among the rows within one standard error of the top accuracy."""
    top = top_row(rows)
    se = top["accuracy_se"] if top["accuracy_se"] == top["accuracy_se"] else 0.0  # NaN with one fold
    return min((r for r in rows if r["accuracy"] >= top["accuracy"] - se), key=lambda r: r["log_loss"])


def head_state_dict(fit: LogisticFit | MLPFit) -> dict[str, torch.Tensor]:
    """A fit -> float32 tensors keyed like the engine's head (``surgery.build_head``)."""
    if isinstance(fit, MLPFit):
        tensors = {"fc1.weight": fit.fc1_weight, "fc1.bias": fit.fc1_bias, "fc.weight": fit.fc_weight,
                   "fc.bias": fit.fc_bias}
    else:
        tensors = {"fc.weight": fit.weight, "fc.bias": fit.bias}
    return {k: v.detach().to(torch.float32).contiguous().clone() for k, v in tensors.items()}


def select_head(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    *,
    hidden: int = DEFAULT_HIDDEN,
    l2_grid: Sequence[float] | None = None,
    folds: int = 5,
    repeats: int = 2,
    seed: int = 0,
    tick: Tick | None = None,
) -> HeadChoice:
    """Cross-validate the linear head over ``l2_grid`` (default :data:`.cv.DEFAULT_L2_GRID`) and, when
    ``hidden`` > 0, a two-layer head of that width; keep the winner by the module's rule; refit it.

    ``x``, ``y``: the training rows only (cached frozen features, raw). ``tick``: called before the
    first fold's path and after each, with (done, total) of the table being computed (:data:`.cv.Tick`).
    """
    y = check_rows(x, y, num_classes)
    started = time.perf_counter()
    splits = resolve_folds(y, folds, repeats, seed)
    linear_rows = cv_logistic(x, y, num_classes, l2_grid or DEFAULT_L2_GRID, splits, tick=tick)
    lin, top = best_row(linear_rows), top_row(linear_rows)
    table_rows, chosen = list(linear_rows), lin
    bar = top["accuracy"] + top["accuracy_se"]
    if hidden <= 0:
        reason = "linear head (no two-layer head asked for)"
    elif bar >= 1.0:
        reason = (f"linear head: CV accuracy {top['accuracy']:.3f} + 1 SE {top['accuracy_se']:.3f} "
                  "reaches 1, no two-layer head could beat it")
    else:
        mlp_rows, reason = _two_layer(x, y, num_classes, hidden, splits, folds, top, seed, tick)
        table_rows += mlp_rows
        mlp = best_row(mlp_rows)
        if mlp["folds"] == len(splits) and mlp["accuracy"] > bar:
            chosen = mlp
    if chosen["hidden"]:
        path = [v for v in sorted(MLP_L2_GRID, reverse=True) if v > chosen["l2"]]  # as the CV reached it
        fit = fit_mlp(x, y, num_classes, chosen["hidden"], chosen["l2"], seed=seed, warm_path=path)
    else:
        fit = fit_logistic(x, y, num_classes, chosen["l2"])
    log.info("select_head: %s (l2 %.3g; %d rows x %d features, %d folds, %.2f s)", reason, chosen["l2"],
             x.shape[0], x.shape[1], len(splits), time.perf_counter() - started)
    return HeadChoice(
        hidden=chosen["hidden"], l2=chosen["l2"], cv_accuracy=chosen["accuracy"], cv_se=chosen["accuracy_se"],
        cv_log_loss=chosen["log_loss"], cv_table=tuple(table_rows), state_dict=head_state_dict(fit), fit=fit,
        reason=reason, rows=int(y.numel()), folds=folds, repeats=repeats, seed=seed,
    )


def fit_head(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    *,
    hidden: int = 0,
    folds: int = 5,
    repeats: int = 2,
    seed: int = 0,
    tick: Tick | None = None,
) -> HeadChoice:
    """The head of a fixed shape (``hidden`` 0: linear; else two layers of that width), its ``l2`` chosen
    by cross-validation on the rows given, as :func:`select_head` chooses it, refitted on all of them.

    For a plan whose head is already decided: the architecture is the plan's; only the strength is fitted.
    """
    y = check_rows(x, y, num_classes)
    started = time.perf_counter()
    splits = resolve_folds(y, folds, repeats, seed)
    if hidden > 0:
        grid = sorted(MLP_L2_GRID, reverse=True)
        paths = [lambda s=s: mlp_path(x, y, num_classes, hidden, grid, s, seed=seed) for s in splits]
        rows = table("mlp", hidden, grid, ticked(paths, tick))
        chosen = best_row(rows)
        path = [v for v in grid if v > chosen["l2"]]
        fit = fit_mlp(x, y, num_classes, hidden, chosen["l2"], seed=seed, warm_path=path)
    else:
        rows = cv_logistic(x, y, num_classes, DEFAULT_L2_GRID, splits, tick=tick)
        chosen = best_row(rows)
        fit = fit_logistic(x, y, num_classes, chosen["l2"])
    reason = f"{'two-layer' if hidden else 'linear'} head as planned, l2 by cross-validation"
    log.info("fit_head: %s (l2 %.3g; %d rows x %d features, %d folds, %.2f s)", reason, chosen["l2"], x.shape[0],
             x.shape[1], len(splits), time.perf_counter() - started)
    return HeadChoice(
        hidden=hidden, l2=chosen["l2"], cv_accuracy=chosen["accuracy"], cv_se=chosen["accuracy_se"],
        cv_log_loss=chosen["log_loss"], cv_table=tuple(rows), state_dict=head_state_dict(fit), fit=fit,
        reason=reason, rows=int(y.numel()), folds=folds, repeats=repeats, seed=seed,
    )


def _two_layer(x, y, num_classes: int, hidden: int, splits, folds: int, top: dict, seed: int,
               tick: Tick | None) -> tuple[list[dict], str]:
    """The two-layer head's CV rows (all folds, or the first repeat's when it is behind there) and the verdict."""
    grid = sorted(MLP_L2_GRID, reverse=True)
    # Screening: the strongest strength only, on the first repeat's folds (the cheap, well-conditioned fit).
    screen = ticked([lambda s=s: mlp_path(x, y, num_classes, hidden, grid[:1], s, seed=seed) for s in splits[:folds]],
                    tick)
    first = best_row(table("mlp", hidden, grid[:1], screen))
    linear_first = sum(top["fold_accuracy"][:folds]) / folds
    if len(splits) > folds and first["accuracy"] <= linear_first:
        return table("mlp", hidden, grid[:1], screen), (
            f"linear head: two-layer head ({hidden} units) CV accuracy {first['accuracy']:.3f} on the first "
            f"{folds} folds is not above the linear head's {linear_first:.3f} on the same folds")
    per_fold = ticked([lambda s=s: mlp_path(x, y, num_classes, hidden, grid, s, seed=seed) for s in splits], tick)
    rows = table("mlp", hidden, grid, per_fold)
    mlp = best_row(rows)
    bar = top["accuracy"] + top["accuracy_se"]
    verdict = "two-layer head" if mlp["accuracy"] > bar else "linear head"
    relation = "beats" if mlp["accuracy"] > bar else "does not beat"
    return rows, (f"{verdict}: two-layer head ({hidden} units) CV accuracy {mlp['accuracy']:.3f} {relation} "
                  f"linear {top['accuracy']:.3f} + 1 SE {top['accuracy_se']:.3f}")
