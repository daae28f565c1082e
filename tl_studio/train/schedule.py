"""Learning-rate schedules as pure functions of the step.

A pure function has no state to checkpoint (LambdaLR's lambdas cannot be
saved without pickling code), so resuming only needs the step number.
"""

from __future__ import annotations

import math


def lr_factor(step: int, total: int, warmup: int, kind: str) -> float:
    """Multiplier on each parameter group's base learning rate at ``step``."""
    total = max(total, 1)
    if kind == "onecycle":
        # Rise for the first 30% (or the warm-up, if longer), then cosine down to ~0.
        peak = max(warmup, int(0.3 * total), 1)
        if step < peak:
            return 0.04 + 0.96 * step / peak
        t = (step - peak) / max(total - peak, 1)
        return 0.5 * (1 + math.cos(math.pi * min(t, 1.0))) * 0.999 + 0.001
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if kind == "constant":
        return 1.0
    t = (step - warmup) / max(total - warmup, 1)
    return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
