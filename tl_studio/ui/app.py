"""The Gradio Blocks app, laid out in the order a person works.

This module only lays out components and wires events to engine calls
(each tab's module holds its handlers). The workspace id lives in the
browser (``gr.BrowserState``), so a reload finds the same data, plan, runs
and running job again.
"""

from __future__ import annotations

import logging

import gradio as gr

from ..workspace import WorkspaceLimit, WorkspaceManager
from . import data_tab, model_tab, predict_tab, strategy_tab, train_tab
from . import session as session_moves
from .context import AppContext, WorkspaceId, api, fail, guarded

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 30

INTRO = """# TL Studio
Take a pretrained network, decide which layers to **freeze**, **train** or **remove**, get a strategy for your
data, fine-tune while the curves update, and try the result on your own photos. Early layers learn generic
features (edges, colours, textures); later ones learn task-specific ones — so the more your images resemble the
pretraining images, the more of the network you can reuse as it is."""


def build_app(manager: WorkspaceManager, *, trust_forwarded: bool = False) -> gr.Blocks:
    """The app; ``trust_forwarded``: behind a Space's or a share link's proxy, whose
    X-Forwarded-For header names the client."""
    ctx = AppContext(manager=manager, shared=manager.shared, trust_forwarded=trust_forwarded)
    with gr.Blocks(title="TL Studio", analytics_enabled=False) as demo:
        ws_state = WorkspaceId(None, storage_key="tl-studio-workspace")
        gr.Markdown(INTRO)
        mode_line = gr.Markdown(_mode_text(manager.shared, ready=False), elem_id="tl-mode")
        with gr.Tabs() as tabs:
            with gr.Tab("1 · Data", id="data"):
                data = data_tab.build(ctx, ws_state)
            with gr.Tab("2 · Model & layers", id="model"):
                model = model_tab.build(ctx, ws_state)
            with gr.Tab("3 · Strategy", id="strategy"):
                strategy = strategy_tab.build(ctx, ws_state, model.model)
            with gr.Tab("4 · Train", id="train"):
                training = train_tab.build(ctx, ws_state, model.model)
            with gr.Tab("5 · Evaluate", id="evaluate") as eval_tab:
                evaluation = _build_evaluate(ctx, ws_state)
            with gr.Tab("6 · Predict", id="predict") as pred_tab:
                predict = predict_tab.build_predict(ctx, ws_state)
            with gr.Tab("7 · Export", id="export") as export_tab:
                export = predict_tab.build_export(ctx, ws_state)
        heartbeat = gr.Timer(HEARTBEAT_SECONDS)
        _wire(ctx, demo, ws_state, mode_line, data, model, strategy, training, evaluation, predict, export,
              eval_tab, pred_tab, export_tab, heartbeat)
        del tabs
    return demo


def _build_evaluate(ctx, ws_state):
    try:
        from . import evaluate_tab
    except ImportError:  # pragma: no cover - the tab ships with the package
        gr.Markdown("Evaluation is not available in this installation.")
        return None
    return evaluate_tab.build(ctx, ws_state)


def _mode_text(shared: bool, ready: bool) -> str:
    mode = "shared: this browser has its own private workspace" if shared else "local, single user"
    return f"<small>Mode: {mode}. {'Workspace ready.' if ready else 'Loading the workspace…'}</small>"


def _wire(ctx, demo, ws_state, mode_line, data, model, strategy, training, evaluation, predict, export,
          eval_tab, pred_tab, export_tab, heartbeat):
    # A new dataset changes the class count (the head) and the images per class.
    def after_data(ws_id, size_by):
        ws = ctx.ws(ws_id)
        return (*model_tab.plan_outputs(ws.session.plan, size_by), *strategy.views(ws.session),
                strategy.status_of(ws))

    after_outputs = model.outputs + strategy.outputs + [strategy.status]
    for event in (data.demo_event, data.zip_event, data.use_event):
        event.success(after_data, [ws_state, model.size_by], after_outputs, api_visibility="private")
    # Another network: the strategy tab recommends for it.
    def after_model(ws_id):
        ws = ctx.ws(ws_id)
        return (*strategy.views(ws.session), strategy.status_of(ws))

    for event in (model.model_event, *model.hub_events):
        event.success(after_model, [ws_state], strategy.outputs + [strategy.status], api_visibility="private")

    # Apply fills the checklist, cut, taps and head, and the training settings: exactly what the tab shows.
    def apply(ws_id, size_by):
        ws = ctx.ws(ws_id)
        with ws.lock:
            try:
                ws.session = session_moves.apply_recommendation(ws.session)
            except ValueError as exc:
                raise fail(str(exc)) from None
            s = ws.session
        gr.Info(f"Applied the {s.recommendation.case.replace('_', ' & ')} plan; every setting stays editable.")
        return (*model_tab.plan_outputs(s.plan, size_by), *train_tab.form_values(s.settings))

    apply_outputs = model.outputs + training.settings
    strategy.apply_btn.click(guarded(apply, len(apply_outputs)), [ws_state, model.size_by], apply_outputs,
                             api_visibility="private")

    def apply_recommendation(ws_id: str, model_name: str, images_per_class: float, similarity: float) -> dict:
        """Recommend for these slider values with this model, apply it, and return the recommendation."""
        ws = ctx.ws(ws_id)
        with ws.lock:
            try:
                s = model_tab.pick_model(ws.session, model_name)
                s = session_moves.with_strategy(s, images_per_class, similarity, s.strategy.second_stage)
                ws.session = session_moves.apply_recommendation(s)
            except ValueError as exc:
                raise fail(str(exc)) from None
            return ws.session.recommendation.to_dict()

    api(guarded(apply_recommendation, 1), "apply_recommendation",
        returns="recommendation")

    def attach(ws_id, request):
        try:
            return ctx.manager.attach(ws_id, client=ctx.client(request))
        except WorkspaceLimit as exc:
            raise fail(f"No new workspace: {exc}") from None

    # Opening the page (or reloading it) attaches to the workspace and restores it.
    def on_load(ws_id, request: gr.Request):
        ws = ctx.ws(attach(ws_id, request).id)
        s = ws.session
        job = train_tab.current_job(ws)
        loss, acc = train_tab.curves(job)
        # A running job's own settings, not the form's defaults, so the form says what is training.
        settings = job.config if job is not None and getattr(job, "config", None) is not None else s.settings
        runs = predict_tab.run_dropdown(ws, s.run)
        log.debug("session %s attached to workspace %s…", getattr(request, "session_hash", "?"), ws.id[:6])
        return (
            ws.id,
            _mode_text(ctx.shared, ready=True),
            model_tab.model_dropdown(s.model),
            *model_tab.plan_outputs(s.plan, "params"),
            *data_tab.dataset_views(ws),
            *strategy.views(s),
            strategy.status_of(ws),
            gr.Timer(active=strategy.running(ws)),
            *train_tab.form_values(settings),
            train_tab.status_line(job), loss, acc,
            gr.Timer(active=job is not None and not job.done),
            runs, runs,
        )

    load_outputs = [ws_state, mode_line, model.model, *model.outputs, *data.views, *strategy.outputs,
                    strategy.status, strategy.timer, *training.settings, training.status, training.loss_plot,
                    training.acc_plot, training.timer, predict.run, export.run]
    # guarded: at the workspace limit the page says why instead of failing blankly
    demo.load(guarded(on_load, len(load_outputs)), [ws_state], load_outputs, api_visibility="private")

    # Run pickers list the workspace's runs afresh whenever their tab opens.
    for tab, dd in ((pred_tab, predict.run), (export_tab, export.run)):
        tab.select(lambda ws_id, cur: predict_tab.run_dropdown(ctx.ws(ws_id), cur), [ws_state, dd], dd,
                   api_visibility="private")
    if evaluation is not None:
        eval_tab.select(evaluation.on_select, [ws_state, *evaluation.select_inputs], evaluation.select_outputs,
                        api_visibility="private")

    # API clients: a workspace of their own (shared mode), to pass to the other endpoints.
    def new_workspace(request: gr.Request) -> str:
        """A new private workspace id (in local mode, the one shared workspace)."""
        return attach(None, request).id

    api(guarded(new_workspace, 1), "new_workspace", returns="workspace id")

    # Tabs that are open keep their workspace alive; unload (which fires on reload too) deletes nothing.
    heartbeat.tick(ctx.manager.touch, [ws_state], None,
                   api_visibility="private", concurrency_limit=None, show_progress="hidden")
    demo.unload(lambda: log.debug("a tab closed or reloaded; its workspace stays for the grace period"))
