"""Tab 3, Strategy: the four cases, measured similarity, the freeze-depth sweep, Apply."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import gradio as gr

from ..strategy import recommend
from ..strategy.figures import cases_figure
from ..strategy.on_dataset import measure_dataset
from .context import AppContext, fail
from .model_tab import current_plan, num_classes
from .stores import decoded

log = logging.getLogger(__name__)


def _rec(ws, model, ipc, sim):
    sweep = ws.state.get("sweep")
    if sweep is not None and sweep[0] != model:
        sweep = None
    try:
        return recommend(
            model, float(ipc), float(sim), num_classes(ws),
            sweep=sweep[1] if sweep else None, second_stage=bool(ws.state.get("second_stage")),
        )
    except ValueError as exc:
        raise fail(str(exc)) from None


def rec_text(rec) -> str:
    mins = rec.estimated_seconds / 60
    eta = f"{rec.estimated_seconds:.0f} s" if mins < 2 else f"{mins:.0f} min"
    return (
        f"### Case: {rec.case.replace('_', ' & ')}\n{rec.rationale}\n\n"
        f"**Suggested:** {rec.epochs} epochs, lr {rec.lr:g}, batch {rec.batch_size}, augmentation "
        f"{rec.augment}; feature cache {'on' if rec.use_cache else 'off'}; about {eta} on {rec.device}."
    )


def build(ctx: AppContext, ws_state, model_dd) -> SimpleNamespace:
    c = SimpleNamespace()
    with gr.Row():
        with gr.Column(scale=2):
            c.ipc = gr.Slider(label="Images per class", minimum=1, maximum=5000, step=1, value=40)
            c.sim = gr.Slider(
                label="Similarity to the pretraining images (0 unrelated … 1 the same kind)",
                minimum=0.0, maximum=1.0, step=0.01, value=0.5,
            )
            c.second_stage = gr.Checkbox(
                label="Small & different: add the optional second stage (then train the whole kept network)",
                value=False,
            )
            with gr.Row():
                c.measure_btn = gr.Button("Measure from my data")
                c.sweep_btn = gr.Button("Run the freeze-depth sweep")
            c.measured = gr.Markdown("")
            c.rec = gr.Markdown("")
            c.apply_btn = gr.Button("Apply: fill the checklist, the cut, the head and the settings", variant="primary")
        with gr.Column(scale=2):
            c.cases = gr.Plot(label="The four cases", format="png", show_label=False)
            c.sweep_plot = gr.LinePlot(
                x="depth", y="val_accuracy", title="Linear probe accuracy by freeze depth",
                x_title="cut after layer (depth index)", y_title="validation accuracy", height=260,
            )
            c.sweep_table = gr.Dataframe(label="Sweep", interactive=False, visible=False)

    def update(ws_id, model, ipc, sim):
        ws = ctx.ws(ws_id)
        r = _rec(ws, model, ipc, sim)
        return rec_text(r), cases_figure(r.images_per_class, r.similarity, r.case)

    def _measured(ws, model, progress, at: float, desc: str, **what):
        """``measure_dataset`` on the workspace's data, decoded once; bad input becomes a UI error."""
        if ws.dataset is None:
            raise fail("Data: load a dataset first (tab 1)")
        progress(0.1, desc="decoding images")
        data = decoded(ws, model)
        progress(at, desc=desc)
        try:
            return measure_dataset(model, ws.dataset, store=data.images, **what)
        except ValueError as exc:
            raise fail(str(exc)) from None

    def measure(ws_id, model, progress=gr.Progress()):
        ws = ctx.ws(ws_id)
        report, _ = _measured(ws, model, progress, 0.4, "running the pretrained network")
        text = (
            f"**Measured similarity {report.similarity:.2f}**, transferability (LogME) "
            f"{report.transferability:.2f} nats/image ({report.transferability_normalised:.0%} of label variance "
            f"explained by frozen features). {report.explanation}"
        )
        r = _rec(ws, model, ws_ipc(ws), report.similarity)
        return report.similarity, text, rec_text(r), cases_figure(r.images_per_class, r.similarity, r.case)

    def sweep(ws_id, model, ipc, sim, progress=gr.Progress()):
        ws = ctx.ws(ws_id)
        _, table = _measured(ws, model, progress, 0.3, "features at every depth, then a linear probe each",
                             similarity=False, sweep=True)
        ws.state["sweep"] = (model, table)
        r = _rec(ws, model, ipc, sim)
        shown = table[["depth", "layer", "val_accuracy", "train_accuracy", "feature_dim"]]
        return shown, gr.Dataframe(value=shown, visible=True), rec_text(r), cases_figure(r.images_per_class, r.similarity, r.case)

    def ws_ipc(ws):
        ds = ws.dataset
        return len(ds.train_idx) / max(len(ds.classes), 1) if ds is not None else 40

    def set_second_stage(ws_id, model, ipc, sim, on):
        ctx.ws(ws_id).state["second_stage"] = bool(on)
        return update(ws_id, model, ipc, sim)

    c.update = update
    c.ws_ipc = ws_ipc
    c.second_stage.input(set_second_stage, [ws_state, model_dd, c.ipc, c.sim, c.second_stage], [c.rec, c.cases],
                         api_visibility="private")
    for comp in (c.ipc, c.sim):
        comp.release(update, [ws_state, model_dd, c.ipc, c.sim], [c.rec, c.cases], api_visibility="private")
    model_dd.input(update, [ws_state, model_dd, c.ipc, c.sim], [c.rec, c.cases], api_visibility="private")
    c.measure_btn.click(
        measure, [ws_state, model_dd], [c.sim, c.measured, c.rec, c.cases], api_name="measure_similarity"
    )
    c.sweep_btn.click(
        sweep, [ws_state, model_dd, c.ipc, c.sim], [c.sweep_plot, c.sweep_table, c.rec, c.cases], api_name="sweep"
    )

    def apply(ws_id, model, ipc, sim):
        ws = ctx.ws(ws_id)
        r = _rec(ws, model, ipc, sim)
        ws.state["plan"] = r.plan
        ws.state["settings"] = {"epochs": r.epochs, "lr": r.lr, "batch_size": r.batch_size, "augment": r.augment}
        current_plan(ws, model)
        return r

    c.apply = apply
    return c


