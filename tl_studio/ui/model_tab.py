"""Tab 2, Model and layers: the checklist (ticked = trains), cut, taps, new head."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import gradio as gr
import pandas as pd

from .. import planview
from ..layers import layer_table
from ..plan import Plan, PlanError
from ..registry import DEFAULT_MODEL, get_spec, list_models, models_table
from ..surgery import body_layer_names
from .context import AppContext, fail

log = logging.getLogger(__name__)

NO_CUT = "(keep all layers)"


def _fmt(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.1f}{unit}"
    return str(int(n))


def model_choices() -> list[tuple[str, str]]:
    table = models_table()
    return [(f"{r.model}  ·  weights {r.weights}", r.model) for r in table.itertuples()]


def layer_choices(model: str, states: pd.DataFrame | None = None) -> list[tuple[str, str]]:
    """(label, name) pairs: the label shows kind, parameters, FLOPs, output shape, state.

    ``states``: :func:`planview.layer_states` of the current plan (marks removed rows).
    """
    table = layer_table(model)
    body = table[table["role"] == "body"]
    states = dict(zip(states["name"], states["state"])) if states is not None else {}
    out = []
    for r in body.itertuples():
        tag = " — removed" if states.get(r.name) == planview.REMOVED_S else ""
        label = f"{r.name}  ·  {r.kind}  ·  {_fmt(r.params)} params  ·  {_fmt(r.flops)} FLOPs  ·  {r.output_shape}{tag}"
        out.append((label, r.name))
    return out


def num_classes(ws) -> int:
    return len(ws.dataset.classes) if ws.dataset is not None else 2


def current_plan(ws, model: str | None = None) -> Plan:
    """The workspace's plan (created for ``model`` if there is none or the model changed)."""
    plan = ws.state.get("plan")
    model = model or (plan.model if plan else DEFAULT_MODEL)
    n = num_classes(ws)
    if plan is None or plan.model != model:
        plan = Plan.head_only(model, n)
    elif plan.head.num_classes != n:
        plan.head.num_classes = n
    ws.state["plan"] = plan
    return plan


def network_frame(st: pd.DataFrame, size_by: str) -> pd.DataFrame:
    """One bar per layer (and the new head) from a plan's layer states."""
    column = "flops" if size_by == "FLOPs" else "params"
    state = [("tapped" if t else s) if s != planview.REMOVED_S else s for s, t in zip(st["state"], st["tapped"])]
    return pd.DataFrame({"layer": st["name"], "size": st[column].astype(float), "state": state})


def network_plot(st: pd.DataFrame, size_by: str) -> gr.BarPlot:
    df = network_frame(st, size_by)
    return gr.BarPlot(value=df, sort=list(df["layer"]), y_title="FLOPs" if size_by == "FLOPs" else "parameters")


def stats_text(plan: Plan, states: pd.DataFrame | None = None) -> str:
    s = planview.summary(plan, states)
    return (
        f"**Trainable:** {_fmt(s['trainable'])} parameters (new head {_fmt(s['head'])}) · "
        f"**Frozen:** {_fmt(s['frozen'])} · **Removed:** {_fmt(s['removed'])} · "
        f"**Layers kept:** {s['kept_layers']} of {s['layers']} · "
        f"**Frozen share of compute:** {s['frozen_compute_share']:.0%} "
        f"(of {_fmt(s['forward_flops'])} FLOPs per image)"
    )


def plan_outputs(plan: Plan, size_by: str) -> tuple:
    """Values for: checklist, cut, taps, head layers, hidden, dropout, bn, stats, network, table, plan JSON."""
    states = planview.layer_states(plan)  # once per edit: everything below derives from it
    v = planview.checklist_values(plan, states)
    names = body_layer_names(plan.model)
    table = states[["depth", "name", "kind", "params", "flops", "output_shape", "state", "tapped"]]
    return (
        gr.CheckboxGroup(choices=layer_choices(plan.model, states), value=v["trained"]),
        gr.Dropdown(choices=[NO_CUT] + names, value=v["cut_after"] or NO_CUT),
        gr.Dropdown(choices=names, value=v["taps"]),
        v["head_layers"],
        v["hidden"],
        v["dropout"],
        v["bn"],
        stats_text(plan, states),
        network_plot(states, size_by),
        table,
        plan.to_json(),
    )


def build(ctx: AppContext, ws_state) -> SimpleNamespace:
    c = SimpleNamespace()
    names = body_layer_names(DEFAULT_MODEL)
    plan0 = Plan.head_only(DEFAULT_MODEL, 2)
    states0 = planview.layer_states(plan0)
    with gr.Row():
        c.model = gr.Dropdown(label="Pretrained model", choices=model_choices(), value=DEFAULT_MODEL, scale=3)
        c.model_info = gr.Markdown(f"{get_spec(DEFAULT_MODEL).description}")
    with gr.Row(equal_height=True):
        c.stats = gr.Markdown(stats_text(plan0, states0))
        c.size_by = gr.Radio(label="Bar size", choices=["params", "FLOPs"], value="params", scale=0, min_width=180)
    c.network = gr.BarPlot(
        value=network_frame(states0, "params"),
        x="layer",
        y="size",
        color="state",
        color_map={**planview.STATE_COLOURS},
        sort=list(states0["name"]),
        title="The network, layer by layer (colour = state)",
        x_label_angle=-60,
        height=300,
        elem_id="tl-network",
    )
    with gr.Row():
        with gr.Column(scale=3):
            c.layers = gr.CheckboxGroup(
                label="Layers: ticked = trains, unticked = frozen (weights never change)",
                choices=layer_choices(DEFAULT_MODEL, states0),
                value=[],
                elem_id="tl-layers",
            )
        with gr.Column(scale=2):
            with gr.Row():
                c.freeze_head_btn = gr.Button("Freeze all but the head", size="sm")
                c.unfreeze_btn = gr.Button("Unfreeze all", size="sm")
            with gr.Row():
                c.freeze_upto = gr.Dropdown(label="Freeze up to (and including)", choices=names, value=None, scale=3)
                c.freeze_upto_btn = gr.Button("Apply", size="sm", scale=1)
            c.cut = gr.Dropdown(
                label="Cut after: every later layer is removed", choices=[NO_CUT] + names, value=NO_CUT
            )
            c.taps = gr.Dropdown(
                label="Taps: feed the head pooled features from these layers (second approach)",
                choices=names,
                value=[],
                multiselect=True,
            )
            with gr.Row():
                c.head_layers = gr.Radio(label="New head: FC layers", choices=[1, 2], value=1)
                c.hidden = gr.Number(label="Hidden width", value=256, precision=0, minimum=8, maximum=8192)
            with gr.Row():
                c.dropout = gr.Slider(label="Head dropout", minimum=0.0, maximum=0.9, step=0.05, value=0.2)
                c.bn = gr.Radio(label="BatchNorm in frozen layers", choices=["frozen", "train"], value="frozen")
    with gr.Accordion("Layer table and plan JSON", open=False):
        c.table = gr.Dataframe(interactive=False, wrap=True)
        c.plan_json = gr.Code(language="json", label="Plan (the same JSON as tl-studio train --plan FILE.json)")

    c.plan_components = [c.layers, c.cut, c.taps, c.head_layers, c.hidden, c.dropout, c.bn]
    c.outputs = c.plan_components + [c.stats, c.network, c.table, c.plan_json]

    def edit(ws_id, model, trained, cut, taps, head_layers, hidden, dropout, bn, size_by):
        ws = ctx.ws(ws_id)
        base = current_plan(ws, model)
        try:
            plan = planview.plan_from_checklist(
                model, num_classes(ws), trained, None if cut in (None, NO_CUT) else cut, taps,
                int(head_layers or 1), int(hidden or 256), float(dropout), bn, base=base,
            )
        except PlanError as exc:
            raise fail(str(exc)) from None
        ws.state["plan"] = plan
        return plan_outputs(plan, size_by)

    def pick_model(ws_id, model, size_by):
        ws = ctx.ws(ws_id)
        try:
            spec = get_spec(model)
        except KeyError as exc:
            raise fail(exc.args[0]) from None
        plan = current_plan(ws, model)
        status = spec.weights_status()
        note = {"embedded": "weights ship with the package (works offline)",
                "cached": "weights found in the local torch cache",
                "download": "weights download on first use (needs the network once)"}[status]
        names = body_layer_names(model)
        return (*plan_outputs(plan, size_by), f"{spec.description} — {note}", gr.Dropdown(choices=names, value=None))

    def quick(action):
        def run(ws_id, model, upto, size_by):
            ws = ctx.ws(ws_id)
            base = current_plan(ws, model)
            n = num_classes(ws)
            names = body_layer_names(model)
            keep = dict(cut_after=base.cut_after, taps=base.taps, bn=base.bn)
            if action == "head":
                plan = Plan.head_only(model, n, **keep)
            elif action == "all":
                plan = Plan.full(model, n, **keep)
            else:
                if not upto:
                    raise fail("Freeze up to: choose a layer first")
                plan = Plan.freeze_upto(model, n, names, upto, **keep)
            plan.head = base.head
            ws.state["plan"] = plan
            return plan_outputs(plan, size_by)

        return run

    def redraw(ws_id, size_by):
        return network_plot(planview.layer_states(current_plan(ctx.ws(ws_id))), size_by)

    inputs = [ws_state, c.model, *c.plan_components, c.size_by]
    for comp in c.plan_components:
        comp.input(edit, inputs, c.outputs, api_visibility="private", concurrency_limit=None, show_progress="hidden")
    c.model_event = c.model.input(
        pick_model, [ws_state, c.model, c.size_by], c.outputs + [c.model_info, c.freeze_upto], api_visibility="private"
    )
    q_inputs = [ws_state, c.model, c.freeze_upto, c.size_by]
    c.freeze_head_btn.click(quick("head"), q_inputs, c.outputs, api_visibility="private")
    c.unfreeze_btn.click(quick("all"), q_inputs, c.outputs, api_visibility="private")
    c.freeze_upto_btn.click(quick("upto"), q_inputs, c.outputs, api_visibility="private")
    c.size_by.input(redraw, [ws_state, c.size_by], c.network, api_visibility="private", concurrency_limit=None)
    c.refresh = lambda ws_id, size_by="params": plan_outputs(current_plan(ctx.ws(ws_id)), size_by)
    return c
