"""Tab 2, Model and layers: the checklist (ticked = trains), cut, taps, new head.

Every control's change goes through :func:`tl_studio.ui.checklist.edit_plan`
(only what changed changes) and every view is drawn from one
:func:`tl_studio.states.layer_states` of the new plan.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from types import SimpleNamespace

import gradio as gr

from ..layout import layout
from ..plan import BN_POLICIES, Plan, PlanError
from ..registry import DEFAULT_MODEL, HUB_SUGGESTIONS, get_spec, models_table
from ..states import layer_states
from . import checklist, session as S
from .context import AppContext, fail, guarded

log = logging.getLogger(__name__)

NO_CUT = "(keep all layers)"
SIZE_BY = ("params", "FLOPs")


def model_choices(current: str | None = None) -> list[tuple[str, str]]:
    """The curated models, the timm models in the Hugging Face cache, and ``current`` if it is neither."""
    table = models_table()
    choices = [(f"{r.model}  ·  weights {r.weights}", r.model) for r in table.itertuples()]
    if current and current not in {value for _, value in choices}:
        choices.append((f"{current}  ·  weights {get_spec(current).weights_status()}", current))
    return choices


def model_dropdown(model: str):
    return gr.Dropdown(choices=model_choices(model), value=model)


def network_plot(st, size_by: str):
    # Rows only: see checklist.network_frame for why no property of the plot changes.
    return checklist.network_frame(st, size_by)


def plan_outputs(plan: Plan, size_by: str) -> tuple:
    """Values for: checklist, cut, taps, head layers, hidden, dropout, bn, stats, network, table, plan JSON."""
    st = layer_states(plan)  # once per edit: everything below derives from it
    lay = layout(plan.model)
    names = list(lay.names)
    head_layers, hidden, dropout = checklist.head_values(plan)
    # LayerNorm models (ViTs, ConvNeXt) have no BatchNorm for the policy to act on.
    bn = gr.Radio(value=plan.bn, interactive=lay.has_batchnorm,
                  info=None if lay.has_batchnorm else "this model has no BatchNorm: nothing to choose")
    return (
        gr.CheckboxGroup(choices=checklist.layer_choices(st), value=st.ticked),
        gr.Dropdown(choices=[NO_CUT] + names, value=plan.cut_after or NO_CUT),
        gr.Dropdown(choices=names, value=list(plan.taps)),
        head_layers,
        hidden,
        dropout,
        bn,
        checklist.stats_text(st),
        network_plot(st, size_by),
        checklist.table(st),
        plan.to_json(),
    )


# ---- moves (plain functions of a session) ------------------------------------------------
def edit(s: S.Session, ticked, cut, taps, head_layers, hidden, dropout, bn) -> S.Session:
    try:
        plan = checklist.edit_plan(
            s.plan, ticked, None if cut in (None, NO_CUT) else cut, taps,
            int(head_layers or 1), int(hidden or checklist.DEFAULT_HIDDEN), float(dropout), bn,
        )
        layer_states(plan)  # validates against the model
    except (PlanError, ValueError, TypeError) as exc:
        raise fail(str(exc)) from None
    return S.with_plan(s, plan)


def quick(s: S.Session, action: str, upto: str | None = None) -> S.Session:
    """The shortcut buttons: freeze all but the head, unfreeze all, freeze up to a layer."""
    base = s.plan
    keep = dict(cut_after=base.cut_after, taps=base.taps, bn=base.bn, head=base.head)
    n = base.head.num_classes
    if action == "head":
        plan = Plan.head_only(base.model, n, **keep)
    elif action == "all":
        plan = Plan.full(base.model, n, **keep)
    else:
        if not upto:
            raise fail("Freeze up to: choose a layer first")
        plan = Plan.freeze_upto(base.model, n, list(layout(base.model).names), upto, **keep)
    plan = replace(plan, body_lr_ratio=base.body_lr_ratio, head_warmup_epochs=base.head_warmup_epochs,
                   unfreeze_all_at=base.unfreeze_all_at)
    return S.with_plan(s, plan)


def pick_model(s: S.Session, model: str) -> S.Session:
    """Another network, curated or a Hub id; one that cannot be used is one clear message."""
    model = (model or "").strip()
    if not model:
        raise fail("Model: choose one from the list or type a Hub id such as timm/convnext_atto.d2_in1k")
    try:
        get_spec(model)
        layout(model)  # a Hub model's layers are worked out here; one that is no chain of layers says why
    except KeyError as exc:
        raise fail(exc.args[0]) from None
    except ValueError as exc:
        raise fail(f"{model}: {exc}") from None
    return S.with_model(s, model)


def model_note(model: str) -> str:
    """What the picker says about a model: its weights, and for a Hub model its revision and licence."""
    spec = get_spec(model)
    status = spec.weights_status()
    if spec.hub is not None:
        note = {"cached": "weights in the Hugging Face cache (works offline)",
                "download": "weights download from the Hugging Face Hub on first use"}[status]
        rev = spec.revision
        return (f"{spec.description} — {note}; revision `{rev[:12] if rev else 'main'}`, "
                f"licence **{spec.hub.licence or 'unknown'}**")
    note = {"embedded": "weights ship with the package (works offline)",
            "cached": "weights found in the local torch cache",
            "download": "weights download on first use (needs the network once)"}[status]
    return f"{spec.description} — {note}"


def build(ctx: AppContext, ws_state) -> SimpleNamespace:
    c = SimpleNamespace()
    plan0 = Plan.head_only(DEFAULT_MODEL, 2)
    st0 = layer_states(plan0)
    names = list(layout(DEFAULT_MODEL).names)
    with gr.Row():
        c.model = gr.Dropdown(label="Pretrained model", choices=model_choices(), value=DEFAULT_MODEL, scale=3)
        with gr.Column(scale=3):
            with gr.Row(equal_height=True):
                c.hub_id = gr.Textbox(label="…or any timm model from the Hugging Face Hub",
                                      placeholder="timm/convnext_atto.d2_in1k", scale=3, elem_id="tl-hub-id")
                c.hub_btn = gr.Button("Use", size="sm", scale=1, elem_id="tl-hub-use")
            gr.Examples(examples=[[h] for h in HUB_SUGGESTIONS], inputs=[c.hub_id], label="Suggestions")
        c.model_info = gr.Markdown(model_note(DEFAULT_MODEL))
    with gr.Row(equal_height=True):
        c.stats = gr.Markdown(checklist.stats_text(st0), elem_id="tl-plan-stats")
        c.size_by = gr.Radio(label="Bar size", choices=list(SIZE_BY), value="params", scale=0, min_width=180)
    gr.Markdown(f"<small>Marks on a layer's name: {checklist.TAP_MARK} tapped (feeds the head), "
                f"{checklist.BN_MARK} its BatchNorm trains though the layer is frozen, "
                f"{checklist.PARTIAL_MARK} part of it differs (see the plan JSON).</small>")
    c.network = gr.BarPlot(
        value=checklist.network_frame(st0, "params"),
        x="layer",
        y="size",
        color="state",
        color_map=dict(checklist.STATE_COLOURS),
        sort="x",
        y_title="size (parameters or FLOPs: see Bar size)",
        title="The network, layer by layer (colour = state)",
        x_label_angle=-60,
        height=360,
        elem_id="tl-network",
    )
    with gr.Row():
        with gr.Column(scale=3):
            c.layers = gr.CheckboxGroup(
                label="Layers: ticked = trains, unticked = frozen (weights never change)",
                choices=checklist.layer_choices(st0),
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
                label="Taps: feed the head pooled features from these layers (features from several layers)",
                choices=names,
                value=[],
                multiselect=True,
            )
            with gr.Row():
                c.head_layers = gr.Radio(label="New head: FC layers", choices=[1, 2], value=1)
                c.hidden = gr.Number(label="Hidden width", value=checklist.DEFAULT_HIDDEN, precision=0,
                                     minimum=8, maximum=8192)
            with gr.Row():
                c.dropout = gr.Slider(label="Head dropout", minimum=0.0, maximum=0.9, step=0.05, value=0.2)
                c.bn = gr.Radio(label="BatchNorm", choices=list(BN_POLICIES), value="frozen",
                                info="frozen: fixed in frozen layers · train: frozen layers' BatchNorm trains · "
                                     "eval: statistics fixed in every layer (small batches, several GPUs)")
    with gr.Accordion("Layer table and plan JSON", open=False):
        c.table = gr.Dataframe(interactive=False, wrap=True)
        c.plan_json = gr.Code(language="json", label="Plan (the same JSON as tl-studio train --plan FILE.json)",
                              elem_id="tl-plan-json")

    c.plan_components = [c.layers, c.cut, c.taps, c.head_layers, c.hidden, c.dropout, c.bn]
    c.outputs = c.plan_components + [c.stats, c.network, c.table, c.plan_json]
    n_out = len(c.outputs)

    def on_edit(ws_id, trained, cut, taps, head_layers, hidden, dropout, bn, size_by):
        ws = ctx.ws(ws_id)
        with ws.lock:
            before = checklist.layer_choices(layer_states(ws.session.plan))
            ws.session = edit(ws.session, trained, cut, taps, head_layers, hidden, dropout, bn)
            plan = ws.session.plan
        out = plan_outputs(plan, size_by)
        st = layer_states(plan)
        if sorted(trained or []) == sorted(st.ticked) and checklist.layer_choices(st) == before:
            # The boxes already show this: sending them back could land after the next click
            # and undo it (a box that re-ticks itself).
            out = (gr.skip(), *out[1:])
        return out

    def on_model(ws_id, model, size_by):
        ws = ctx.ws(ws_id)
        with ws.lock:
            ws.session = pick_model(ws.session, model)
            plan = ws.session.plan
        names = list(layout(model).names)
        return (*plan_outputs(plan, size_by), model_note(model), gr.Dropdown(choices=names, value=None))

    def on_quick(action):
        def run(ws_id, upto, size_by):
            ws = ctx.ws(ws_id)
            with ws.lock:
                ws.session = quick(ws.session, action, upto)
                plan = ws.session.plan
            return plan_outputs(plan, size_by)

        run.__name__ = f"quick_{action}"
        return run

    def redraw(ws_id, size_by):
        return network_plot(layer_states(ctx.ws(ws_id).session.plan), size_by)

    inputs = [ws_state, *c.plan_components, c.size_by]
    for comp in c.plan_components:
        comp.input(guarded(on_edit, n_out), inputs, c.outputs, api_visibility="private", concurrency_limit=None,
                   show_progress="hidden")
    c.model_event = c.model.input(
        guarded(on_model, n_out + 2), [ws_state, c.model, c.size_by], c.outputs + [c.model_info, c.freeze_upto],
        api_visibility="private",
    )

    def on_hub(ws_id, hub_id, size_by):
        out = on_model(ws_id, (hub_id or "").strip(), size_by)
        return (*out, model_dropdown(ctx.ws(ws_id).session.model))

    hub_outputs = c.outputs + [c.model_info, c.freeze_upto, c.model]
    c.hub_events = [
        trigger(guarded(on_hub, n_out + 3), [ws_state, c.hub_id, c.size_by], hub_outputs, api_visibility="private")
        for trigger in (c.hub_btn.click, c.hub_id.submit)
    ]
    q_inputs = [ws_state, c.freeze_upto, c.size_by]
    c.freeze_head_btn.click(guarded(on_quick("head"), n_out), q_inputs, c.outputs, api_visibility="private")
    c.unfreeze_btn.click(guarded(on_quick("all"), n_out), q_inputs, c.outputs, api_visibility="private")
    c.freeze_upto_btn.click(guarded(on_quick("upto"), n_out), q_inputs, c.outputs, api_visibility="private")
    c.size_by.input(guarded(redraw, 1), [ws_state, c.size_by], c.network, api_visibility="private",
                    concurrency_limit=None)
    c.refresh = lambda ws_id, size_by="params": plan_outputs(ctx.ws(ws_id).session.plan, size_by)
    return c
