"""A plan seen from the outside: per-layer states, parameter counts, the share of
compute frozen, and the conversion to and from the checklist's plain values.

Computed from the cached layer table, without building weights, so the UI
can redraw on every tick of the checklist.
"""

from __future__ import annotations

import functools

import pandas as pd

from .layers import layer_table
from .plan import FROZEN, TRAIN, HeadSpec, Plan
from .surgery import _pooled_width, body_layer_names, validate

FROZEN_S, TRAINING_S, REMOVED_S, TAPPED_S, HEAD_S = "frozen", "training", "removed", "tapped", "new head"
STATE_COLOURS = {
    FROZEN_S: "#5b8def",  # blue: kept as pretrained
    TRAINING_S: "#f28e2b",  # orange: learns
    REMOVED_S: "#c7c7c7",  # grey: cut off
    TAPPED_S: "#59a14f",  # green: feeds the head directly
    HEAD_S: "#e15759",  # red: new
}
_BN_MODULES = ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm")


@functools.cache
def _param_modules(model: str) -> tuple[tuple[tuple[str, int, bool], ...], ...]:
    """Per coarse body layer: its parameter-holding modules as (name, params, is_bn).

    Cached per model so that a checklist tick costs plain Python loops, not
    pandas filtering per layer.
    """
    table = layer_table(model)
    fine = layer_table(model, "fine")
    fine = fine[fine["params"] > 0]
    out = []
    for name in table[table["role"] == "body"]["name"]:
        rows = fine[(fine["name"] == name) | fine["name"].str.startswith(name + ".")]
        out.append(tuple((r.name, int(r.params), r.module in _BN_MODULES) for r in rows.itertuples()))
    return tuple(out)


def _layer_state(plan: Plan, modules) -> str:
    """'frozen', 'training' or 'mixed' for one coarse layer, from its parameters."""
    if not modules:
        return FROZEN  # nothing to train (pooling)
    states = {plan.state_of(name + ".weight", is_bn) for name, _, is_bn in modules}
    return states.pop() if len(states) == 1 else "mixed"


def layer_states(plan: Plan) -> pd.DataFrame:
    """The coarse layer table with each row's state under this plan (plus the new head)."""
    cut, taps = validate(plan)
    table = layer_table(plan.model)
    body = table[table["role"] == "body"].copy()
    states = []
    for i, modules in enumerate(_param_modules(plan.model)):
        if i > cut:
            states.append(REMOVED_S)
            continue
        s = _layer_state(plan, modules)
        states.append({FROZEN: FROZEN_S, TRAIN: TRAINING_S}.get(s, s))
    body["state"] = states
    body["tapped"] = [i in taps for i in range(len(body))]
    head_params, head_flops, _ = head_size(plan)
    head = pd.DataFrame(
        [{"depth": len(body), "name": "new head", "kind": "fc", "module": "Sequential", "group": "head",
          "role": "head", "params": head_params, "flops": head_flops,
          "output_shape": str(plan.head.num_classes), "state": HEAD_S, "tapped": False}]
    )
    return pd.concat([body, head], ignore_index=True)


def head_size(plan: Plan) -> tuple[int, int, int]:
    """(parameters, FLOPs, input width) of the plan's new head."""
    cut, taps = validate(plan)
    table = layer_table(plan.model)
    body = table[table["role"] == "body"].reset_index(drop=True)
    width = sum(_pooled_width(body.loc[i, "output_shape"]) for i in (taps or [cut]))
    h: HeadSpec = plan.head
    if h.hidden:
        params = width * h.hidden + h.hidden + h.hidden * h.num_classes + h.num_classes
        flops = 2 * (width * h.hidden + h.hidden * h.num_classes)
    else:
        params = width * h.num_classes + h.num_classes
        flops = 2 * width * h.num_classes
    return params, flops, width


def summary(plan: Plan, states: pd.DataFrame | None = None) -> dict:
    """Trainable and frozen parameter counts and the share of compute that is frozen.

    ``states``: :func:`layer_states` of this plan, if the caller has it already.
    """
    states = layer_states(plan) if states is None else states
    cut, _ = validate(plan)
    trainable = frozen = 0
    for modules in _param_modules(plan.model)[: cut + 1]:
        for name, params, is_bn in modules:
            if plan.state_of(name + ".weight", is_bn) == FROZEN:
                frozen += params
            else:
                trainable += params
    head_params = int(states.iloc[-1]["params"])
    kept = states[(states["state"] != REMOVED_S) & (states["role"] == "body")]
    kept_flops = int(kept["flops"].sum())
    frozen_flops = int(kept[kept["state"] == FROZEN_S]["flops"].sum())
    removed = states[states["state"] == REMOVED_S]
    return {
        "trainable": int(trainable + head_params),
        "frozen": int(frozen),
        "removed": int(removed["params"].sum()),
        "head": head_params,
        "kept_layers": int(cut + 1),
        "layers": len(_param_modules(plan.model)),
        "frozen_compute_share": frozen_flops / kept_flops if kept_flops else 0.0,
        "forward_flops": kept_flops + int(states.iloc[-1]["flops"]),
    }


def checklist_values(plan: Plan, states: pd.DataFrame | None = None) -> dict:
    """The UI's plain values for a plan: ticked (training) layers, cut, taps, head."""
    states = layer_states(plan) if states is None else states
    body = states[states["role"] == "body"]
    return {
        "trained": [n for n, s in zip(body["name"], body["state"]) if s in (TRAINING_S, "mixed")],
        "cut_after": plan.cut_after,
        "taps": list(plan.taps),
        "head_layers": plan.head.fc_layers,
        "hidden": plan.head.hidden or 256,
        "dropout": plan.head.dropout,
        "bn": plan.bn,
    }


def plan_from_checklist(
    model: str,
    num_classes: int,
    trained: list[str],
    cut_after: str | None,
    taps: list[str],
    head_layers: int,
    hidden: int,
    dropout: float,
    bn: str,
    base: Plan | None = None,
) -> Plan:
    """Build a plan from the checklist's values; schedule fields come from ``base``."""
    names = body_layer_names(model)
    trained_set = set(trained or [])
    keep = dict(
        body_lr_ratio=base.body_lr_ratio if base else 1.0,
        head_warmup_epochs=base.head_warmup_epochs if base else 0,
        unfreeze_all_at=base.unfreeze_all_at if base else None,
    )
    plan = Plan(
        model=model,
        head=HeadSpec(
            num_classes=int(num_classes),
            hidden=int(hidden) if int(head_layers) == 2 else 0,
            dropout=float(dropout),
        ),
        layers={n: (TRAIN if n in trained_set else FROZEN) for n in names},
        default=TRAIN,
        cut_after=cut_after or None,
        taps=list(taps or []),
        bn=bn,
        **keep,
    )
    validate(plan)
    return plan
