"""Heads fitted on stored features, remembered: the evidence pass and the trainer fit each head once.

The evidence pass chooses the head (:func:`tl_studio.probe.select_head`) on
the training rows' features at the chosen layers; training that plan then
asks for the same head on the same rows. Both go through :func:`head_on`,
which keeps the last few fits per (features, layers, rows, labels, seed), so
the second ask costs nothing and gives the identical head.
"""

from __future__ import annotations

import collections
import hashlib
import threading

import torch

from ..probe import HeadChoice, fit_head, select_head, single_threaded
from .featureset import FeatureSet

MEMO_ENTRIES = 8
_memo: collections.OrderedDict[tuple, HeadChoice] = collections.OrderedDict()
_lock = threading.Lock()


def _digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().to(torch.int64).contiguous().numpy().tobytes()).hexdigest()[:16]


def head_on(
    fs: FeatureSet,
    layers: list[str] | tuple[str, ...],
    rows: list[int],
    labels: torch.Tensor,
    num_classes: int,
    *,
    hidden: int,
    decide: bool = False,
    folds: int = 5,
    repeats: int = 2,
    seed: int = 0,
    tick=None,
) -> HeadChoice:
    """The head on ``fs``'s features at ``layers`` for the training ``rows`` (labels of all rows given).

    ``decide``: choose between the linear head and a two-layer head of
    ``hidden`` units (the evidence pass); otherwise fit exactly that shape
    (``hidden`` 0: linear), its strength by cross-validation. ``tick``: as :func:`tl_studio.probe.select_head`'s.
    """
    idx = torch.as_tensor(rows, dtype=torch.long)
    y = torch.as_tensor(labels, dtype=torch.long)[idx]
    base = (fs.key, tuple(layers), _digest(idx), _digest(y), int(num_classes), folds, repeats, seed)
    key = (*base, "decide" if decide else "fixed", int(hidden))
    with _lock:
        if key in _memo:
            _memo.move_to_end(key)
            return _memo[key]
    x = fs.x(list(layers), idx)
    with single_threaded():  # small products: a second thread costs more than it gives
        if decide:
            choice = select_head(x, y, num_classes, hidden=hidden, folds=folds, repeats=repeats, seed=seed,
                                 tick=tick)
        else:
            choice = fit_head(x, y, num_classes, hidden=hidden, folds=folds, repeats=repeats, seed=seed, tick=tick)
    with _lock:
        _memo[key] = choice
        # The decided head is also the fixed head of its own shape: the trainer asks for that one.
        _memo[(*base, "fixed", choice.hidden)] = choice
        while len(_memo) > MEMO_ENTRIES:
            _memo.popitem(last=False)
    return choice
