"""The model tab's view of a plan: checklist values, the network picture's rows and the counts line.

Gradio-free: everything here reads one :class:`tl_studio.states.PlanStates`
(the one rule for layer state) and returns plain values, so it is tested
without a browser. Editing goes the other way through :func:`edit_plan`,
which changes only what a control changed: a round trip through any control
leaves the plan as it was.
"""

from __future__ import annotations

from dataclasses import replace

import pandas as pd

from ..layout import layout, shape_text
from ..plan import FROZEN, TRAIN, HeadSpec, Plan
from ..states import FROZEN_S, HEAD_S, REMOVED_S, TRAINS_S, PlanStates, layer_states

# Every state the picture can draw has a colour; annotations (tapped,
# BatchNorm trains, partial) are marks on the layer's label, not colours.
STATE_COLOURS = {
    FROZEN_S: "#5b8def",  # blue: kept as pretrained
    TRAINS_S: "#f28e2b",  # orange: learns
    REMOVED_S: "#c7c7c7",  # grey: cut off
    HEAD_S: "#e15759",  # red: new
}
TAP_MARK, BN_MARK, PARTIAL_MARK = "◆", "ᴮᴺ", "*"
DEFAULT_HIDDEN = 256


def fmt(n: float) -> str:
    """1.2M, 34.5k: for FLOPs and layer sizes, where the order of magnitude is the point."""
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.1f}{unit}"
    return str(int(n))


def marks(s) -> str:
    out = []
    if s.tapped:
        out.append(TAP_MARK)
    if s.bn_trains:
        out.append(BN_MARK)
    if s.partial:
        out.append(PARTIAL_MARK)
    return (" " + "".join(out)) if out else ""


def layer_choices(st: PlanStates) -> list[tuple[str, str]]:
    """(label, name) pairs for the checklist: kind, parameters, FLOPs, output shape, state and marks."""
    lay = layout(st.plan.model)
    out = []
    for s, info in zip(st.layers, lay.body):
        notes = []
        if s.state == REMOVED_S:
            notes.append("removed")
        if s.tapped:
            notes.append("tapped")
        if s.bn_trains:
            notes.append("BatchNorm trains")
        if s.bn_eval and s.state == TRAINS_S:  # a frozen layer's BatchNorm is in eval mode whatever the policy
            notes.append("BatchNorm in eval mode")
        if s.partial:
            notes.append("partly differs (see plan JSON)")
        tail = (" — " + ", ".join(notes)) if notes else ""
        out.append((f"{s.name}  ·  {info.kind}  ·  {fmt(s.params)} params  ·  {fmt(s.flops)} FLOPs  ·  "
                    f"{shape_text(info.output_shape)}{tail}", s.name))
    return out


def network_frame(st: PlanStates, size_by: str) -> pd.DataFrame:
    """One bar per layer and one for the new head; the label carries the depth and the annotations.

    The depth prefix ("07 blocks.6") makes the labels sort in network order
    by themselves: the plot's properties then never change after it is first
    drawn, only its rows. (Gradio 6.31 redraws a plot whose properties change
    with the rows it had before, which drew FLOPs on the parameter bars.)
    """
    column = "flops" if size_by == "FLOPs" else "params"
    rows = st.rows()
    width = len(str(len(rows)))
    labels = [f"{i:0{width}d} {r['name']}" + (marks(s) if s is not None else "")
              for i, (r, s) in enumerate(zip(rows, list(st.layers) + [None]))]
    return pd.DataFrame({"layer": labels, "size": [float(r[column]) for r in rows], "state": [r["state"] for r in rows]})


def stats_text(st: PlanStates) -> str:
    """The counts line: exact parameter counts (they are what people check), rounded FLOPs."""
    s = st.summary()
    bn = " (BatchNorm of frozen layers included)" if any(x.bn_trains for x in st.kept) else ""
    if any(x.bn_eval for x in st.kept):
        bn += " (BatchNorm statistics fixed: eval mode)"
    return (
        f"**Trainable:** {s['trainable']:,} parameters{bn} (new head {s['head']:,}) · "
        f"**Frozen:** {s['frozen']:,} · **Removed:** {s['removed']:,} · "
        f"**Layers kept:** {s['kept_layers']} of {s['layers']} · "
        f"**Frozen share of compute:** {s['frozen_compute_share']:.0%} "
        f"(of {fmt(s['forward_flops'])} FLOPs per image)"
    )


def table(st: PlanStates) -> pd.DataFrame:
    lay = layout(st.plan.model)
    shapes = [shape_text(x.output_shape) for x in lay.body] + [str(st.plan.head.num_classes)]
    df = pd.DataFrame(st.rows())
    df["output_shape"] = shapes
    return df[["index", "name", "state", "tapped", "bn_trains", "params", "trainable", "flops", "output_shape"]]


def head_values(plan: Plan) -> tuple[int, int, float]:
    """(FC layers, hidden width shown, dropout) for the head controls."""
    return plan.head.fc_layers, plan.head.hidden or DEFAULT_HIDDEN, plan.head.dropout


def edit_plan(
    base: Plan,
    ticked: list[str] | None,
    cut_after: str | None,
    taps: list[str] | None,
    head_layers: int,
    hidden: int,
    dropout: float,
    bn: str,
) -> Plan:
    """The plan after the model tab's controls: only what a control changed is changed.

    A layer whose tick changed is set as a whole (finer entries inside it go);
    every other layer keeps its entries, so unticking and re-ticking a layer,
    or switching the BatchNorm policy there and back, returns the same plan.
    """
    st = layer_states(base)
    now = set(ticked or [])
    was = set(st.ticked)
    names = list(layout(base.model).names)
    plan = base
    on = [n for n in names if n in now and n not in was]
    off = [n for n in names if n not in now and n in was]
    if on:
        plan = plan.with_layers(on, TRAIN)
    if off:
        plan = plan.with_layers(off, FROZEN)
    head = HeadSpec(
        num_classes=base.head.num_classes,
        hidden=int(hidden) if int(head_layers) == 2 else 0,
        dropout=float(dropout),
    )
    tap_list = tuple(dict.fromkeys(taps or []))
    if set(tap_list) != set(base.taps):
        # New taps in network order, so the head's input layout does not depend on click order.
        order = {n: i for i, n in enumerate(names)}
        tap_list = tuple(sorted(tap_list, key=lambda t: order.get(t, len(order))))
    else:
        tap_list = base.taps
    return replace(plan, head=head, cut_after=cut_after or None, taps=tap_list, bn=bn)
