"""Tab 3, Strategy: the four cases as sliders, the evidence measured on your data, Apply.

What the tab shows is the session's recommendation, and Apply applies that
very value. "Measure from my data" runs the evidence pass (one pass of the
frozen network, then probes on the training split) as a stoppable job; its
result moves the sliders to what was measured and decides the plan, for as
long as the same data and model are loaded. Moving a slider afterwards sets
the evidence aside (and says so): the four cases decide again.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import gradio as gr

from ..strategy.evidence import estimate_seconds, scope
from ..strategy.figures import cases_figure, evidence_figure
from ..strategy.on_dataset import recommend_for_data
from . import background, session as S
from .context import AppContext, PollTimer, api, fail, guarded
from .stores import decoded, feature_store

log = logging.getLogger(__name__)

KIND = "evidence pass"
CURVE_COLUMNS = ["index", "layer", "accuracy", "se", "feature_dim"]
# Where the app first cites its source (the README does too); elsewhere it says "the four cases".
SOURCE_NOTE = (
    "The recommender follows the four cases of *ML | Introduction to Transfer Learning* (GeeksforGeeks, 2021): "
    "small or large data, similar to or different from the pretraining images (ImageNet). Early layers learn "
    "generic features, later ones task-specific features, so the more alike your images are, the more of the "
    "network you can reuse as it is. Measuring from your data runs the network once over your images and "
    "probes every layer on your training images: that evidence then decides the cut, the taps and the head."
)


def rec_text(s: S.Session) -> str:
    rec = s.recommendation
    if rec is None:
        return ""
    mins = rec.estimated_seconds / 60
    eta = f"{rec.estimated_seconds:.0f} s" if mins < 2 else f"{mins:.0f} min"
    if rec.fitted_head:
        schedule = "the head fitted to convergence on the frozen features (no epochs)"
    else:
        schedule = f"{rec.epochs} epochs, lr {rec.lr:g}, batch {rec.batch_size}, augmentation {rec.augment}"
    source = ""
    if s.source == S.EVIDENCE:
        source = "*From the evidence measured on your training images.*\n\n"
    elif s.evidence is not None and s.evidence.model == s.model and s.matching_evidence is not None:
        source = ("*The sliders were moved, so the evidence is set aside: this is the four cases' plan for the "
                  "slider values. Measure again (it is cached) to use the evidence.*\n\n")
    return (
        f"### Case: {rec.case.replace('_', ' & ')}\n{source}{rec.rationale}\n\n"
        f"**Suggested:** {schedule}; feature cache {'on' if rec.use_cache else 'off'}; about {eta} on "
        f"{rec.device}."
    )


def measured_text(s: S.Session) -> str:
    ev = s.matching_evidence
    if ev is None:
        return ""
    r = ev.similarity
    return (f"**Measured similarity {r.similarity:.2f}**, transferability (LogME) {r.transferability:.2f} nats/image "
            f"({r.transferability_normalised:.0%} of label variance explained by frozen features). {r.explanation}")


def cost_text(s: S.Session) -> str:
    """What measuring will cost, said before it starts."""
    ds = s.dataset
    if ds is None:
        return "Load a dataset (tab 1) to measure the evidence from it."
    images, probed, words = scope(ds)
    seconds = estimate_seconds(s.model, images, probed)
    return f"Measuring runs {s.model} over {words}: about {seconds:.0f} s (less when cached). It can be stopped."


def views(s: S.Session) -> tuple:
    """Values for: images per class, similarity, second stage, measured, recommendation, cases figure,
    evidence figure, curve table."""
    rec = s.recommendation
    fig = cases_figure(rec.images_per_class, rec.similarity, rec.case) if rec is not None else None
    ev = s.matching_evidence
    curve = ev.frame()[CURVE_COLUMNS].round(3) if ev is not None else None
    return (
        s.strategy.images_per_class,
        s.strategy.similarity,
        s.strategy.second_stage,
        measured_text(s),
        rec_text(s),
        fig,
        evidence_figure(ev) if ev is not None else None,
        gr.Dataframe(value=curve, visible=curve is not None),
    )


# ---- moves (plain functions of a session) ------------------------------------------------
def require_data(s: S.Session):
    if s.dataset is None:
        raise fail("Data: load a dataset first (tab 1)")


def start_measuring(ws):
    """The evidence pass as this workspace's job; it writes its result into the session when it ends."""
    s = ws.session
    require_data(s)
    model, dataset = s.model, s.dataset

    def work(publish, check_stop):
        images = decoded(ws, model, dataset, publish=publish).images
        try:
            measured = recommend_for_data(model, dataset, images=images, store=feature_store(ws),
                                          second_stage=s.strategy.second_stage, publish=publish,
                                          check_stop=check_stop)
        except ValueError as exc:
            raise fail(str(exc)) from None
        with ws.lock:
            ws.session = S.with_evidence(ws.session, measured.evidence)
        return measured

    return background.start(ws, KIND, work)


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
                c.measure_btn = gr.Button("Measure from my data", elem_id="tl-measure", variant="secondary")
                c.stop_btn = gr.Button("Stop measuring", elem_id="tl-measure-stop", variant="stop", size="sm")
            c.status = gr.Markdown("", elem_id="tl-measure-status")
            c.measured = gr.Markdown("", elem_id="tl-measured", label="Measured similarity")
            c.rec = gr.Markdown("", elem_id="tl-rec", label="Recommendation")
            c.apply_btn = gr.Button("Apply: fill the checklist, the cut, the head and the settings", variant="primary",
                                    elem_id="tl-apply")
        with gr.Column(scale=2):
            c.cases = gr.Plot(label="The four cases", format="png", show_label=False)
            c.curve_plot = gr.Plot(label="The probe curve", format="png", show_label=False, elem_id="tl-curve")
            c.curve_table = gr.Dataframe(label="Probe curve (cross-validated on the training split)",
                                         interactive=False, visible=False)
    c.timer = PollTimer(1.0, active=False)
    c.outputs = [c.ipc, c.sim, c.second_stage, c.measured, c.rec, c.cases, c.curve_plot, c.curve_table]
    n_out = len(c.outputs)

    def measure(ws_id):
        ws = ctx.ws(ws_id)
        job = start_measuring(ws)
        return background.status_text(job, KIND), gr.Timer(active=True)

    def tick(ws_id):
        ws = ctx.ws(ws_id)
        job = background.current(ws, KIND)
        if job is None or not job.done:
            return (background.status_text(job, KIND), gr.Timer(active=job is not None),
                    *(gr.skip() for _ in range(n_out)))
        return (background.status_text(job, KIND) or cost_text(ws.session), gr.Timer(active=False),
                *views(ws.session))

    def stop(ws_id):
        return background.stop(ctx.ws(ws_id), KIND)

    def sliders(ws_id, ipc, sim, second_stage):
        ws = ctx.ws(ws_id)
        with ws.lock:
            ws.session = S.with_strategy(ws.session, ipc, sim, second_stage)
            return views(ws.session)

    def measure_api(ws_id: str) -> dict:
        """Run the evidence pass on the workspace's data and model; wait for it; return the recommendation."""
        ws = ctx.ws(ws_id)
        job = start_measuring(ws)
        job.wait()
        measured = background.result(job)
        if measured is None:
            raise fail(background.status_text(job, KIND).replace("**", ""))
        return measured.recommendation.to_dict()

    slider_inputs = [ws_state, c.ipc, c.sim, c.second_stage]
    for comp in (c.ipc, c.sim):
        comp.release(guarded(sliders, n_out), slider_inputs, c.outputs, api_visibility="private")
    c.second_stage.input(guarded(sliders, n_out), slider_inputs, c.outputs, api_visibility="private")
    c.measure_btn.click(guarded(measure, 2), [ws_state], [c.status, c.timer], api_visibility="private")
    c.stop_btn.click(guarded(stop, 1), [ws_state], [c.status], api_visibility="private")
    c.timer.tick(guarded(tick, 2 + n_out), [ws_state], [c.status, c.timer, *c.outputs], api_visibility="private",
                 show_progress="hidden", concurrency_limit=None)
    # API clients: the same pass, synchronously (the freeze-depth sweep is part of it).
    api(guarded(measure_api, 1), "measure_similarity", returns="recommendation")
    api(guarded(measure_api, 1), "sweep", returns="recommendation")
    c.views = views
    c.cost_text = cost_text
    c.status_of = lambda ws: background.status_text(background.current(ws, KIND), KIND) or cost_text(ws.session)
    c.running = lambda ws: (lambda j: j is not None and not j.done)(background.current(ws, KIND))
    return c
