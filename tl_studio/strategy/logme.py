"""LogME: how well frozen features predict the labels, without training anything.

You, Liu, Wang and Long, "LogME: Practical Assessment of Pre-trained Models
for Transfer Learning", ICML 2021. For each class k, the one-hot column y_k
is modelled as Bayesian linear regression on the features F (n x D):
y = F w + noise, w ~ N(0, 1/alpha), noise ~ N(0, 1/beta). alpha and beta
maximise the evidence p(y | F) by MacKay's fixed-point iteration; LogME is the
maximised log evidence per sample, averaged over classes. Higher is better;
the scale is in nats per sample and depends on the number of classes, so it
compares feature extractors (or layers) on one dataset, not datasets.

Because it also fits beta, the noise precision, it gives a reading in [0, 1]
that does compare across datasets: the share of label variance the features
explain, ``1 - (1 / beta) / var(y_k)`` (an R^2), averaged over classes.

Everything runs on one SVD of F in float64, so D > n (1280 features, 30
images) costs no more than n > D.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

MAX_ITERATIONS = 2000  # the paper caps at 11; an unpredictable class (alpha -> inf) converges slowly
TOLERANCE = 1e-6  # relative change of alpha and beta at which the fixed point has converged
EPSILON = 1e-5  # keeps the fixed-point denominators positive, as in the reference code


@dataclass(frozen=True)
class LogMEResult:
    logme: float  # mean log evidence per sample, nats
    explained: float  # mean R^2 of the fitted model, in [0, 1]
    per_class: list[float]  # log evidence per sample of each class's one-hot column
    alpha: list[float]
    beta: list[float]


def logme(features: torch.Tensor, labels: torch.Tensor) -> LogMEResult:
    """LogME of ``features`` (n, D) for integer ``labels`` (n,)."""
    f = torch.as_tensor(features).double()
    y_int = torch.as_tensor(labels).long()
    if f.ndim != 2 or y_int.ndim != 1 or f.shape[0] != y_int.shape[0]:
        raise ValueError(f"logme: features (n, D) and labels (n,) must agree, got {tuple(f.shape)} and {tuple(y_int.shape)}")
    n, d = f.shape
    classes = torch.unique(y_int)
    if classes.numel() < 2:
        raise ValueError("logme: labels must contain at least two classes")
    y = (y_int[:, None] == classes[None, :]).double()  # (n, K) one-hot columns

    u, s, _ = torch.linalg.svd(f, full_matrices=False)
    sigma = s * s  # non-zero eigenvalues of F^T F (k = min(n, D) of them)
    k = sigma.numel()
    z = u.T @ y  # (k, K): targets in the left singular basis
    z2 = z * z
    y_sq = (y * y).sum(0)
    outside = (y_sq - z2.sum(0)).clamp_min(0)  # residual no weight vector can explain

    alpha = torch.ones(y.shape[1], dtype=torch.float64)
    beta = torch.ones(y.shape[1], dtype=torch.float64)
    for _ in range(MAX_ITERATIONS):
        denom = alpha + beta * sigma[:, None]  # (k, K)
        gamma = (beta * sigma[:, None] / denom).sum(0)
        m2 = (beta**2 * sigma[:, None] * z2 / denom**2).sum(0)  # |m|^2
        res2 = outside + (alpha**2 * z2 / denom**2).sum(0)  # |y - F m|^2
        new_alpha = gamma / (m2 + EPSILON)
        new_beta = (n - gamma) / (res2 + EPSILON)
        done = (
            ((new_alpha - alpha).abs() / alpha).max() < TOLERANCE
            and ((new_beta - beta).abs() / beta).max() < TOLERANCE
        )
        alpha, beta = new_alpha, new_beta
        if done:
            break
    denom = alpha + beta * sigma[:, None]
    m2 = (beta**2 * sigma[:, None] * z2 / denom**2).sum(0)
    res2 = outside + (alpha**2 * z2 / denom**2).sum(0)
    log_det_a = torch.log(denom).sum(0) + (d - k) * torch.log(alpha)
    evidence = (
        d / 2 * torch.log(alpha)
        + n / 2 * torch.log(beta)
        - 0.5 * log_det_a
        - beta / 2 * res2
        - alpha / 2 * m2
        - n / 2 * math.log(2 * math.pi)
    ) / n
    var_y = y.var(0, unbiased=False).clamp_min(1e-12)
    r2 = (1.0 - (1.0 / beta) / var_y).clamp(0.0, 1.0)
    return LogMEResult(
        logme=float(evidence.mean()),
        explained=float(r2.mean()),
        per_class=evidence.tolist(),
        alpha=alpha.tolist(),
        beta=beta.tolist(),
    )
