"""Static evaluation figures as ``matplotlib.figure.Figure`` objects.

Never pyplot: its global state is not thread-safe, and Gradio closes the
figures it is given, so every call builds new ones. ``layout="constrained"``
keeps long class names inside the canvas.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

# Beyond this many classes, numbers in the cells would be unreadable.
ANNOTATE_MAX_CLASSES = 20


def _message_figure(text: str, size=(6, 3)) -> Figure:
    fig = Figure(figsize=size, layout="constrained")
    ax = fig.add_subplot()
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=11, color="0.35", wrap=True)
    ax.set_axis_off()
    return fig


def _epoch_axis(ax, last: int) -> None:
    """Whole epochs on the x axis, with room around a single epoch's points."""
    from matplotlib.ticker import MaxNLocator

    ax.set_xlim(0.5, last + 0.5)
    if last <= 12:
        ax.set_xticks(range(1, last + 1))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def confusion_figure(cm: pd.DataFrame, *, normalized: bool) -> Figure:
    """A confusion matrix heatmap; rows are true classes, columns predictions."""
    n = len(cm)
    side = min(16.0, max(4.5, 0.55 * n + 2.5))
    fig = Figure(figsize=(side + 1.2, side), layout="constrained")
    ax = fig.add_subplot()
    values = cm.to_numpy(dtype=np.float64)
    vmax = 1.0 if normalized else max(1.0, values.max())
    im = ax.imshow(values, cmap="Blues", vmin=0, vmax=vmax, interpolation="nearest")
    fig.colorbar(im, ax=ax, shrink=0.8, label="share of the true class" if normalized else "images")
    labels = [str(c) for c in cm.index]
    ax.set_xticks(range(n), labels=[str(c) for c in cm.columns], rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(n), labels=labels)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title("Confusion matrix (row-normalised)" if normalized else "Confusion matrix (counts)")
    if n <= ANNOTATE_MAX_CLASSES:
        for i in range(n):
            for j in range(n):
                v = values[i, j]
                text = f"{v:.2f}" if normalized else f"{int(v)}"
                # white on dark cells, dark on light ones
                colour = "white" if v > 0.6 * vmax else "0.15"
                ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=9 if n > 10 else 11)
    return fig


def reliability_figure(table: pd.DataFrame, ece: float) -> Figure:
    """Accuracy against confidence per bin, the diagonal of perfect calibration, and bin counts."""
    fig = Figure(figsize=(6, 6), layout="constrained")
    ax, axn = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    width = table["upper"] - table["lower"]
    centres = table["lower"] + width / 2
    filled = table["count"] > 0
    ax.plot([0, 1], [0, 1], ls="--", color="0.5", lw=1, label="perfect calibration")
    ax.bar(centres[filled], table.loc[filled, "accuracy"], width=width[filled] * 0.9, color="tab:blue",
           alpha=0.8, edgecolor="tab:blue", label="accuracy in bin")
    ax.plot(table.loc[filled, "confidence"], table.loc[filled, "accuracy"], "o", color="tab:orange",
            label="mean confidence")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability diagram (ECE {ece:.3f})" if not math.isnan(ece) else "Reliability diagram")
    ax.legend(loc="upper left", fontsize=9)
    ax.grid(alpha=0.3)
    axn.bar(centres, table["count"], width=width * 0.9, color="0.55")
    axn.set_xlabel("confidence (top probability)")
    axn.set_ylabel("images")
    return fig


def per_class_figure(per_class: pd.DataFrame) -> Figure:
    """Precision, recall and F1 for each class as grouped horizontal bars."""
    n = len(per_class)
    fig = Figure(figsize=(7, min(20.0, max(3.0, 0.6 * n + 1.5))), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(n)
    h = 0.26
    for k, (col, colour) in enumerate((("precision", "tab:blue"), ("recall", "tab:orange"), ("f1", "tab:green"))):
        ax.barh(y + (k - 1) * h, per_class[col], height=h, color=colour, label=col)
    labels = [f"{c} (n={s})" for c, s in zip(per_class["class"], per_class["support"])]
    ax.set_yticks(y, labels=labels)
    ax.invert_yaxis()  # first class on top, as in the table
    ax.set_xlim(0, 1.02)
    ax.set_xlabel("score")
    ax.set_title("Per-class precision, recall and F1")
    # below the axes: bars reaching 1.0 would hide under a legend inside
    fig.legend(loc="outside lower center", ncols=3, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    return fig


def curves_figure(epochs: pd.DataFrame | None, title: str = "") -> Figure:
    """Loss and accuracy per epoch from a run's metrics.csv."""
    if epochs is None or not len(epochs):
        return _message_figure("no metrics.csv: the run has no finished epoch")
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    x = epochs["epoch"]
    # Losses fall and accuracies rise: each legend sits where its curves are not.
    panels = ((ax_loss, "loss", "Loss", "upper right"), (ax_acc, "accuracy", "Accuracy", "lower right"))
    for ax, key, name, corner in panels:
        ax.plot(x, epochs[f"train_{key}"], "o-", color="tab:blue", label=f"train {key}")
        ax.plot(x, epochs[f"val_{key}"], "s-", color="tab:orange", label=f"validation {key}")
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend(loc=corner, fontsize=9)
        _epoch_axis(ax, int(x.max()))
    ax_acc.set_ylim(0, 1.02)
    if title:
        fig.suptitle(title)
    return fig


def compare_figure(runs: list[tuple[str, pd.DataFrame | None]]) -> Figure:
    """Validation accuracy and losses of several runs, one colour per run."""
    if not runs:
        return _message_figure("select two or more runs to compare")
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    ax_acc, ax_loss = fig.subplots(1, 2)
    colours = [f"C{i % 10}" for i in range(len(runs))]
    for (name, epochs), colour in zip(runs, colours):
        if epochs is None or not len(epochs):
            ax_acc.plot([], [], color=colour, label=f"{name} (no metrics)")
            continue
        x = epochs["epoch"]
        ax_acc.plot(x, epochs["val_accuracy"], "o-", color=colour, label=name)
        ax_loss.plot(x, epochs["val_loss"], "o-", color=colour)
        ax_loss.plot(x, epochs["train_loss"], "--", color=colour, alpha=0.6)
    ax_acc.set_title("Validation accuracy")
    ax_acc.set_ylim(0, 1.02)
    ax_loss.set_title("Loss (solid: validation, dashed: train)")
    for ax in (ax_acc, ax_loss):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        _epoch_axis(ax, max((int(e["epoch"].max()) for _, e in runs if e is not None and len(e)), default=1))
    fig.legend(loc="outside lower center", ncols=min(4, len(runs)), fontsize=9)
    return fig
