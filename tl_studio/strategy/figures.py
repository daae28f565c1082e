"""The four cases as a picture, with the current dataset as a point on it.

Built as a ``matplotlib.figure.Figure`` (never pyplot, which is not
thread-safe under a server handling several users).
"""

from __future__ import annotations

import math

from matplotlib.figure import Figure

from . import rules
from .recommend import CASES

_LABELS = {
    "small_similar": "small & similar\nnew FC head,\nfreeze the rest",
    "large_similar": "large & similar\nnew last layer,\ntrain everything",
    "small_different": "small & different\ncut most later layers,\nkeep low-level, add layers",
    "large_different": "large & different\nnew last layer,\nnothing frozen",
}
_COLOURS = {
    "small_similar": "#dbe9f6",
    "large_similar": "#d9f0d3",
    "small_different": "#fde0c5",
    "large_different": "#f6d5e1",
}
X_MIN, X_MAX = 5, 5000  # images per class on a log axis


def cases_figure(images_per_class: float, similarity: float, case: str | None = None) -> Figure:
    fig = Figure(figsize=(5.2, 4.0), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    split_x = rules.CASE_SPLIT_DATA
    split_y = rules.SIMILAR
    cells = {
        "small_different": (X_MIN, split_x, 0.0, split_y),
        "large_different": (split_x, X_MAX, 0.0, split_y),
        "small_similar": (X_MIN, split_x, split_y, 1.0),
        "large_similar": (split_x, X_MAX, split_y, 1.0),
    }
    for name, (x0, x1, y0, y1) in cells.items():
        ax.fill_between([x0, x1], y0, y1, color=_COLOURS[name], alpha=1.0 if name == case else 0.45, lw=0)
        cx = math.sqrt(x0 * x1)
        ax.text(cx, (y0 + y1) / 2, _LABELS[name], ha="center", va="center", fontsize=8.5,
                weight="bold" if name == case else "normal")
    x = min(max(float(images_per_class), X_MIN), X_MAX)
    ax.plot([x], [similarity], "o", ms=11, color="#d62728", mec="white", mew=2, zorder=5)
    ax.axvline(split_x, color="#555", lw=0.8, ls="--")
    ax.axhline(split_y, color="#555", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_xlim(X_MIN, X_MAX)
    ax.set_ylim(0, 1)
    ax.set_xlabel("images per class (log scale)")
    ax.set_ylabel("similarity to the pretraining images")
    where = f" — you are here: {case.replace('_', ' & ')}" if case in CASES else ""
    ax.set_title(f"The four cases{where}", fontsize=10)
    return fig


def evidence_figure(ev) -> Figure:
    """The probe curve with ± one standard error, the band within noise of the best, and the choice."""
    df = ev.frame()
    fig = Figure(figsize=(5.2, 3.6), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    best = ev.point(ev.best)
    ax.axhspan(best.accuracy - best.se, best.accuracy + best.se, color="#d9f0d3", lw=0,
               label="within noise of the best (±1 SE)")
    ax.errorbar(df["index"], df["accuracy"], yerr=df["se"], fmt="-o", ms=3.5, lw=1.2, color="#5b8def",
                ecolor="#9bb7f0", capsize=2, label="ridge probe, CV on training images")
    chosen = [ev.point(t) for t in (ev.taps or (ev.cut,))]
    ax.plot([p.index for p in chosen], [p.accuracy for p in chosen], "o", ms=9, mfc="none", mec="#e15759", mew=2,
            label="the head reads" if ev.taps else "the cut (kept up to here)")
    ax.set_xticks(df["index"])
    ax.set_xticklabels(df["layer"], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("held-out accuracy (training folds)")
    ax.set_ylim(max(0.0, float(df["accuracy"].min()) - 0.1), min(1.0, float(df["accuracy"].max()) + 0.08))
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("How much of the network transfers: the probe curve", fontsize=10)
    return fig
