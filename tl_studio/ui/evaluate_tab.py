"""Tab 5, Evaluate: metrics, a confusion matrix you can drill into, mistakes, calibration, history."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import gradio as gr

from ..evaluate import EvaluationError, compare_runs_figure, confusion_cell, delete_run, evaluate_run, runs_table
from ..runs import RunError
from . import background
from .context import AppContext, PollTimer, fail, guarded, name_dropdown
from .predict_tab import FINISHED, remember_run, run_choices, run_dropdown, run_entries

log = logging.getLogger(__name__)

KIND = "evaluation"


def _metrics_text(ev) -> str:
    s = ev.summary()
    topk = " · ".join(f"top-{k} {v:.1%}" for k, v in sorted(ev.top_k_accuracy.items()) if k > 1)
    lo, hi = s["accuracy_95ci"]
    return (
        f"**Accuracy {ev.accuracy:.1%}** (95% interval {lo:.1%}–{hi:.1%}) on {s['images']} images"
        f"{' · ' + topk if topk else ''} · macro F1 {ev.macro_f1:.3f} · expected calibration error {ev.ece:.3f}"
        + (f" · {s['skipped']} file(s) skipped" if s["skipped"] else "")
    )


def unfinished_note(ws, name: str) -> str:
    """A warning line for a run that did not finish (stopped, failed, still running, crashed)."""
    status = {n: st for _, n, st in run_entries(ws)}.get(name)
    if status in (None, FINISHED):
        return ""
    return (f"⚠ **This run is {status}**: it did not finish its planned epochs, so these numbers describe "
            "whatever weights it saved.\n\n")


def confusion_frame(ev):
    """The confusion counts as a table whose first column names the true class (cells are clickable)."""
    df = ev.confusion.copy()
    df.insert(0, "true \\ predicted", list(df.index))
    return df.reset_index(drop=True)


def build(ctx: AppContext, ws_state) -> SimpleNamespace:
    c = SimpleNamespace()
    with gr.Row():
        c.run = name_dropdown("Run", scale=3, elem_id="tl-eval-run")
        c.go = gr.Button("Evaluate on its validation set", variant="primary", scale=2, elem_id="tl-evaluate")
        c.stop_btn = gr.Button("Stop", variant="stop", scale=1, size="sm")
    c.status = gr.Markdown("", elem_id="tl-eval-status")
    c.timer = PollTimer(1.0, active=False)
    c.metrics = gr.Markdown("", elem_id="tl-eval-metrics", label="Metrics")
    with gr.Row():
        with gr.Column():
            c.normalized = gr.Checkbox(label="Normalise rows (recall per class)", value=False)
            c.confusion = gr.Plot(label="Confusion matrix", format="png", show_label=False)  # the figure has its title
            c.confusion_table = gr.Dataframe(label="Confusion counts: click a cell to see its images",
                                             interactive=False, elem_id="tl-confusion-table")
            with gr.Row():
                c.true_cls = name_dropdown("True class")
                c.pred_cls = name_dropdown("Predicted class")
                c.cell_btn = gr.Button("Show these images", size="sm")
            c.cell = gr.Gallery(label="Images in that cell", columns=6, height="auto", elem_id="tl-cell")
        with gr.Column():
            c.per_class = gr.Dataframe(label="Per class", interactive=False)
            c.reliability = gr.Plot(label="Calibration (reliability diagram)", format="png", show_label=False)
    c.mistakes = gr.Gallery(label="Most confident mistakes", columns=6, height="auto")
    gr.Markdown("### Run history")
    c.history = gr.Dataframe(interactive=False)  # one line per run; wrapped, the narrow columns broke mid-word
    with gr.Row():
        c.compare_runs = name_dropdown("Compare runs (curves overlaid)", multiselect=True, scale=3)
        c.compare_btn = gr.Button("Compare", scale=1)
    c.compare_plot = gr.Plot(label="Runs compared", format="png")
    with gr.Row():
        c.delete_run = name_dropdown("Delete a run", scale=3)
        c.delete_btn = gr.Button("Delete", variant="stop", scale=1)

    def evaluate(ws_id, run, normalized):
        """Evaluate a run as a stoppable job: the page follows it with a timer; an API client waits."""
        ws = ctx.ws(ws_id)
        if not run:
            raise fail("Run: train a model first (tab 4), or choose a run")
        try:
            path = ws.run_path(run)
        except ValueError as exc:
            raise fail(str(exc)) from None

        def work(publish, check_stop):
            try:
                ev = evaluate_run(path, publish=publish, check_stop=check_stop)
            except (RunError, EvaluationError) as exc:
                raise fail(str(exc)) from None
            ws.cache["evaluation"], ws.cache["evaluated"] = ev, run
            return ev

        return background.run_for_caller(ws, KIND, work, lambda ev: render(ws, ev, run, normalized), len(outputs))

    def render(ws, ev, run, normalized):
        figs = ev.figures()
        mistakes = [(str(r.path), f"{r.true} → {r.predicted} ({r.probability:.0%})") for r in ev.mistakes(12).itertuples()]
        classes = list(ev.confusion.index)
        return (
            unfinished_note(ws, run) + _metrics_text(ev),
            figs["confusion_normalized" if normalized else "confusion"],
            confusion_frame(ev),
            ev.per_class.round(3),
            figs["reliability"],
            gr.Gallery(value=mistakes, label="Most confident mistakes" if mistakes
                       else "Most confident mistakes: none, every validation image is classified right"),
            gr.Dropdown(choices=classes, value=classes[0] if classes else None),
            gr.Dropdown(choices=classes, value=classes[1] if len(classes) > 1 else None),
        )

    def toggle(ws_id, normalized):
        ev = ctx.ws(ws_id).cache.get("evaluation")
        if ev is None:
            return gr.skip()
        return ev.figures()["confusion_normalized" if normalized else "confusion"]

    def cell(ws_id, true_class, predicted_class):
        ev = ctx.ws(ws_id).cache.get("evaluation")
        if ev is None:
            raise fail("Evaluate a run first")
        try:
            rows = confusion_cell(ev, true_class, predicted_class)
        except (KeyError, ValueError) as exc:
            raise fail(str(exc)) from None
        if rows.empty:
            gr.Info(f"No image of {true_class} was predicted as {predicted_class}.")
        return [(str(r.path), f"{r.probability:.0%}") for r in rows.itertuples()]

    def cell_clicked(ws_id, evt: gr.SelectData):
        """One click on a count opens the images in that cell."""
        ev = ctx.ws(ws_id).cache.get("evaluation")
        if ev is None:
            raise fail("Evaluate a run first")
        row, col = evt.index
        classes = list(ev.confusion.index)
        if col == 0 or not (0 <= row < len(classes)) or not (1 <= col <= len(classes)):
            return gr.skip(), gr.skip(), gr.skip()
        true_cls, pred_cls = classes[row], classes[col - 1]
        return true_cls, pred_cls, cell(ws_id, true_cls, pred_cls)

    def history(ws_id):
        ws = ctx.ws(ws_id)
        table = runs_table(ws.runs_dir)
        names = run_choices(ws)
        shown = table.drop(columns=[c for c in ("path",) if c in table.columns])
        shown = shown.rename(columns=lambda name: name.replace("_", " "))
        return shown, gr.Dropdown(choices=names), gr.Dropdown(choices=names, value=None)

    def compare(ws_id, names):
        ws = ctx.ws(ws_id)
        if not names:
            raise fail("Compare: choose one or more runs")
        try:
            return compare_runs_figure([ws.run_path(n) for n in names])
        except ValueError as exc:
            raise fail(str(exc)) from None

    def delete(ws_id, name):
        ws = ctx.ws(ws_id)
        if not name:
            raise fail("Delete: choose a run")
        try:
            delete_run(ws.run_path(name), runs_dir=ws.runs_dir)
        except (ValueError, RunError) as exc:
            raise fail(str(exc)) from None
        gr.Info(f"Deleted run {name}")
        return (*history(ws_id), run_dropdown(ws))

    def on_select(ws_id, current):
        ws = ctx.ws(ws_id)
        return (run_dropdown(ws, current), *history(ws_id))

    c.on_select = on_select
    c.select_inputs = [c.run]
    c.select_outputs = [c.run, c.history, c.compare_runs, c.delete_run]
    outputs = [c.metrics, c.confusion, c.confusion_table, c.per_class, c.reliability, c.mistakes, c.true_cls,
               c.pred_cls]

    def followed(ws_id):
        return background.followed(ctx.ws(ws_id), KIND)

    def tick(ws_id, normalized):
        ws = ctx.ws(ws_id)
        job = background.current(ws, KIND)
        if job is None or not job.done:
            return (background.status_text(job, KIND), gr.Timer(active=job is not None),
                    *(gr.skip() for _ in outputs))
        ev = background.result(job)
        if ev is None:  # stopped, failed or refused: say so, keep what was shown
            return (background.status_text(job, KIND), gr.Timer(active=False), *(gr.skip() for _ in outputs))
        return "", gr.Timer(active=False), *render(ws, ev, ws.cache.get("evaluated", ""), normalized)

    def stop(ws_id):
        return background.stop(ctx.ws(ws_id), KIND)

    c.go.click(guarded(evaluate, len(outputs)), [ws_state, c.run, c.normalized], outputs, api_name="evaluate") \
        .then(followed, [ws_state], [c.status, c.timer], api_visibility="private")
    c.timer.tick(guarded(tick, 2 + len(outputs)), [ws_state, c.normalized], [c.status, c.timer, *outputs],
                 api_visibility="private", show_progress="hidden", concurrency_limit=None)
    c.stop_btn.click(guarded(stop, 1), [ws_state], [c.status], api_visibility="private")
    c.normalized.input(guarded(toggle, 1), [ws_state, c.normalized], c.confusion, api_visibility="private")
    c.cell_btn.click(guarded(cell, 1), [ws_state, c.true_cls, c.pred_cls], c.cell, api_name="confusion_cell")
    c.confusion_table.select(guarded(cell_clicked, 3), [ws_state], [c.true_cls, c.pred_cls, c.cell],
                             api_visibility="private")
    c.compare_btn.click(guarded(compare, 1), [ws_state, c.compare_runs], c.compare_plot, api_visibility="private")
    c.delete_btn.click(guarded(delete, 4), [ws_state, c.delete_run],
                       [c.history, c.compare_runs, c.delete_run, c.run], api_visibility="private")
    c.run.input(remember_run(ctx), [ws_state, c.run], None, api_visibility="private")
    return c
