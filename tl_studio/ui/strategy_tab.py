"""Tab 3, Strategy: the four cases, measured similarity, the freeze-depth sweep, Apply.

What the tab shows is the session's recommendation, and Apply applies that
very value. Measuring moves the sliders to what was measured; moving a slider
afterwards sets the measurement aside (and says so).
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import gradio as gr

from ..strategy.figures import cases_figure
from ..strategy.on_dataset import measure_dataset
from . import session as S
from .context import AppContext, fail, guarded
from .stores import decoded

log = logging.getLogger(__name__)

# Where the app first cites its source (the README does too); elsewhere it says "the four cases".
SOURCE_NOTE = (
    "The recommender follows the four cases of *ML | Introduction to Transfer Learning* (GeeksforGeeks, 2021): "
    "small or large data, similar to or different from the pretraining images (ImageNet). Early layers learn "
    "generic features, later ones task-specific features, so the more alike your images are, the more of the "
    "network you can reuse as it is."
)
SWEEP_COLUMNS = ["depth", "layer", "val_accuracy", "train_accuracy", "feature_dim"]


def rec_text(s: S.Session) -> str:
    rec = s.recommendation
    if rec is None:
        return ""
    mins = rec.estimated_seconds / 60
    eta = f"{rec.estimated_seconds:.0f} s" if mins < 2 else f"{mins:.0f} min"
    source = ""
    if s.source == S.EVIDENCE:
        source = "*From the evidence measured on your data.*\n\n"
    elif s.evidence is not None and s.evidence.matches(s.model, s.dataset):
        source = ("*The sliders were moved, so the measurement is set aside: this is the four-case rule for "
                  "the slider values. Measure again to use the evidence.*\n\n")
    return (
        f"### Case: {rec.case.replace('_', ' & ')}\n{source}{rec.rationale}\n\n"
        f"**Suggested:** {rec.epochs} epochs, lr {rec.lr:g}, batch {rec.batch_size}, augmentation "
        f"{rec.augment}; feature cache {'on' if rec.use_cache else 'off'}; about {eta} on {rec.device}."
    )


def measured_text(s: S.Session) -> str:
    ev = s.matching_evidence
    return ev.similarity_note if ev is not None else ""


def sweep_table(s: S.Session):
    ev = s.matching_evidence
    if ev is None or ev.sweep is None:
        return None
    return ev.sweep[SWEEP_COLUMNS]


def views(s: S.Session) -> tuple:
    """Values for: images per class, similarity, second stage, measured, recommendation, cases figure,
    sweep plot, sweep table."""
    rec = s.recommendation
    fig = cases_figure(rec.images_per_class, rec.similarity, rec.case) if rec is not None else None
    table = sweep_table(s)
    return (
        s.strategy.images_per_class,
        s.strategy.similarity,
        s.strategy.second_stage,
        measured_text(s),
        rec_text(s),
        fig,
        table,
        gr.Dataframe(value=table, visible=table is not None),
    )


# ---- moves (plain functions of a session) ------------------------------------------------
def require_data(s: S.Session):
    if s.dataset is None:
        raise fail("Data: load a dataset first (tab 1)")


def measured_similarity(s: S.Session, report) -> S.Session:
    note = (
        f"**Measured similarity {report.similarity:.2f}**, transferability (LogME) "
        f"{report.transferability:.2f} nats/image ({report.transferability_normalised:.0%} of label variance "
        f"explained by frozen features). {report.explanation}"
    )
    ev = S.Evidence(s.model, s.dataset.fingerprint, similarity=float(report.similarity), similarity_note=note)
    return S.with_evidence(s, ev)


def measured_sweep(s: S.Session, table) -> S.Session:
    return S.with_evidence(s, S.Evidence(s.model, s.dataset.fingerprint, sweep=table))


def build(ctx: AppContext, ws_state, model_dd) -> SimpleNamespace:
    c = SimpleNamespace()
    gr.Markdown(SOURCE_NOTE)
    with gr.Row():
        with gr.Column(scale=2):
            c.ipc = gr.Slider(label="Images per class", minimum=1, maximum=5000, step=1,
                              value=S.DEFAULT_IMAGES_PER_CLASS, elem_id="tl-ipc")
            c.sim = gr.Slider(
                label="Similarity to the pretraining images", info="0 unrelated … 1 the same kind",
                minimum=0.0, maximum=1.0, step=0.01, value=S.DEFAULT_SIMILARITY, elem_id="tl-sim",
            )
            c.second_stage = gr.Checkbox(
                label="Optional second stage",
                info="small & different data: after the new layers, train the whole kept network",
                value=False,
            )
            with gr.Row():
                c.measure_btn = gr.Button("Measure from my data", elem_id="tl-measure")
                c.sweep_btn = gr.Button("Run the freeze-depth sweep", elem_id="tl-sweep")
            c.measured = gr.Markdown("", elem_id="tl-measured", label="Measured similarity")
            c.rec = gr.Markdown("", elem_id="tl-rec", label="Recommendation")
            c.apply_btn = gr.Button("Apply: fill the checklist, the cut, the head and the settings", variant="primary",
                                    elem_id="tl-apply")
        with gr.Column(scale=2):
            c.cases = gr.Plot(label="The four cases", format="png", show_label=False)
            c.sweep_plot = gr.LinePlot(
                x="depth", y="val_accuracy", title="Linear probe accuracy by freeze depth", label="Sweep curve",
                x_title="cut after layer (depth index)", y_title="validation accuracy", height=260,
            )
            c.sweep_table = gr.Dataframe(label="Sweep", interactive=False, visible=False)
    c.outputs = [c.ipc, c.sim, c.second_stage, c.measured, c.rec, c.cases, c.sweep_plot, c.sweep_table]
    n_out = len(c.outputs)

    def run_measure(ws, progress, at: float, desc: str, **what):
        """``measure_dataset`` on the session's data, decoded once; bad input becomes a user error."""
        s = ws.session
        require_data(s)
        progress(0.1, desc="decoding images")
        data = decoded(ws, s.model, s.dataset)
        progress(at, desc=desc)
        try:
            return s, measure_dataset(s.model, s.dataset, store=data.images, **what)
        except ValueError as exc:
            raise fail(str(exc)) from None

    def measure(ws_id, progress=gr.Progress()):
        ws = ctx.ws(ws_id)
        s, (report, _) = run_measure(ws, progress, 0.4, "running the pretrained network")
        with ws.lock:
            if ws.session.dataset is s.dataset and ws.session.model == s.model:  # nothing changed meanwhile
                ws.session = measured_similarity(ws.session, report)
            return views(ws.session)

    def sweep(ws_id, progress=gr.Progress()):
        ws = ctx.ws(ws_id)
        s, (_, table) = run_measure(ws, progress, 0.3, "features at every depth, then a linear probe each",
                                    similarity=False, sweep=True)
        with ws.lock:
            if ws.session.dataset is s.dataset and ws.session.model == s.model:
                ws.session = measured_sweep(ws.session, table)
            return views(ws.session)

    def sliders(ws_id, ipc, sim, second_stage):
        ws = ctx.ws(ws_id)
        with ws.lock:
            ws.session = S.with_strategy(ws.session, ipc, sim, second_stage)
            return views(ws.session)

    slider_inputs = [ws_state, c.ipc, c.sim, c.second_stage]
    for comp in (c.ipc, c.sim):
        comp.release(guarded(sliders, n_out), slider_inputs, c.outputs, api_visibility="private")
    c.second_stage.input(guarded(sliders, n_out), slider_inputs, c.outputs, api_visibility="private")
    c.measure_btn.click(guarded(measure, n_out), [ws_state], c.outputs, api_name="measure_similarity")
    c.sweep_btn.click(guarded(sweep, n_out), [ws_state], c.outputs, api_name="sweep")
    c.views = views
    return c
