"""Tabs 6 and 7, Predict and Export: try a run on new images; download its files."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pandas as pd

from ..atomic import write_text
from ..data import ImageRejected
from ..export import ONNX_MISSING, ExportError, export_run, onnx_available
from ..predict import base_predictor, run_predictor
from ..runs import RunError
from . import background
from . import session as S
from .context import AppContext, PollTimer, fail, guarded, name_dropdown, redact

log = logging.getLogger(__name__)

EXPORT = "export"


FINISHED = "finished"
ONNX_OK = onnx_available()  # checked once: installing a package needs a restart anyway


def run_entries(ws) -> list[tuple[str, str, str]]:
    """(label, run name, status) for the workspace's runs, newest first; the label says status and accuracy."""
    from ..evaluate import runs_table

    table = runs_table(ws.runs_dir)
    out = []
    for r in table.itertuples():
        if "/" in str(r.run):  # runs nested deeper are not this workspace's own run folders
            continue
        status = str(r.status)
        acc = r.best_val_accuracy
        acc_text = f" · val acc {acc:.3f}" if isinstance(acc, (int, float)) and acc == acc else ""
        mark = "" if status == FINISHED else " ⚠"
        out.append((f"{r.run} · {status}{acc_text}{mark}", str(r.run), status))
    return out


def run_choices(ws) -> list[str]:
    return [name for _, name, _ in run_entries(ws)]


def run_dropdown(ws, keep: str | None = None) -> gr.Dropdown:
    """The run picker: every run, marked with its status; only a finished run is ever pre-selected."""
    entries = run_entries(ws)
    names = [name for _, name, _ in entries]
    keep = keep or (ws.session.run if ws.session is not None else None)  # picked in another tab
    finished = [name for _, name, status in entries if status == FINISHED]
    value = keep if keep in names else (finished[0] if finished else None)
    return gr.Dropdown(choices=[(label, name) for label, name, _ in entries], value=value)

from gradio.events import Dependency

class TolerantImage(gr.Image):
    """An image box whose upload Gradio cannot decode still reaches the handler, as its path.

    The handler then names the file and what is wrong with it; a plain
    ``gr.Image`` fails before any handler runs, with Gradio's "Could not
    preprocess input component" and no file name.
    """

    is_template = True  # the browser draws it as a gr.Image

    def preprocess(self, payload):
        try:
            return super().preprocess(payload)
        except Exception as exc:  # noqa: BLE001 - any decoding failure is the handler's to report
            path = getattr(payload, "path", None)
            log.info("image box: %s could not be decoded (%s); the handler reports it", path, exc)
            return str(path) if path else None
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component


def _run(ctx, ws_id, name):
    ws = ctx.ws(ws_id)
    if not name:
        raise fail("Run: train a model first (tab 4), or choose a run")
    try:
        return ws, ws.run_path(name)
    except ValueError as exc:
        raise fail(str(exc)) from None


def remember_run(ctx):
    """The run a person picks is the session's run in every tab (and after a reload)."""

    def pick(ws_id, name):
        ws = ctx.ws(ws_id)
        with ws.lock:
            ws.session = S.with_run(ws.session, name or None)

    return pick


def build_predict(ctx: AppContext, ws_state) -> SimpleNamespace:
    c = SimpleNamespace()
    with gr.Row():
        c.run = name_dropdown("Run", scale=3, elem_id="tl-predict-run")
        c.refresh = gr.Button("Refresh runs", scale=1, size="sm")
        c.top_k = gr.Slider(label="Top-k", minimum=1, maximum=10, step=1, value=3, scale=2)
    with gr.Row():
        with gr.Column():
            c.image = TolerantImage(label="An image (upload, webcam or paste)", type="filepath",
                               sources=["upload", "webcam", "clipboard"], height=300, elem_id="tl-predict-image")
            c.files = gr.File(label="…or several images", file_count="multiple", type="filepath")
            c.go = gr.Button("Predict", variant="primary", elem_id="tl-predict-go")
        with gr.Column():
            c.finetuned = gr.Label(label="Fine-tuned model", elem_id="tl-predict-label")
            c.base = gr.Label(label="Base model's own ImageNet prediction")
        with gr.Column():
            c.cam = gr.Image(label="Grad-CAM: where the fine-tuned model looked", type="pil", height=300)
    c.table = gr.Dataframe(label="All images", interactive=False, wrap=True)

    def predict(ws_id, run, image, files, top_k):
        ws, path = _run(ctx, ws_id, run)
        images = ([image] if image else []) + list(files or [])
        if not images:
            raise fail("Image: upload an image (or take one with the webcam) first")
        try:
            pred = run_predictor(path)
        except RunError as exc:
            raise fail(str(exc)) from None
        k = int(top_k)
        rows, first_ft, first_base, cam = [], None, None, None
        for i, img in enumerate(images):
            label = Path(img).name
            try:
                top = pred.predict([img], k)[0]
            except (ImageRejected, OSError, ValueError) as exc:
                rows.append({"image": label, "prediction": f"skipped: {exc}", "probability": None})
                continue
            rows.append({"image": label, "prediction": top[0]["label"], "probability": round(top[0]["probability"], 4)})
            if first_ft is None:
                first_ft = {p["label"]: p["probability"] for p in top}
                try:
                    base = base_predictor(pred.model_name).predict([img], k)[0]
                    first_base = {p["label"]: p["probability"] for p in base}
                except Exception as exc:  # e.g. base weights not available offline
                    log.warning("base model prediction unavailable: %s", exc)
                    first_base = {f"unavailable: {exc}": 0.0}
                cam = _gradcam(path, img)
        if first_ft is None:
            why = "; ".join(f"{r['image']}: {r['prediction'].removeprefix('skipped: ')}" for r in rows[:3])
            raise fail(f"Image: none of the given files could be read as an image ({why})")
        return first_ft, first_base, cam, pd.DataFrame(rows)

    c.predict = predict
    c.go.click(guarded(predict, 4), [ws_state, c.run, c.image, c.files, c.top_k],
               [c.finetuned, c.base, c.cam, c.table], api_name="predict")
    c.refresh.click(lambda ws_id, cur: run_dropdown(ctx.ws(ws_id), cur), [ws_state, c.run], c.run,
                    api_visibility="private")
    c.run.input(remember_run(ctx), [ws_state, c.run], None, api_visibility="private")
    return c


def _gradcam(run_path: Path, image):
    try:
        from ..evaluate import GradCAMUnavailable, gradcam
    except ImportError:  # the evaluation package is optional for prediction
        return None
    try:
        return gradcam(run_path, image).overlay
    except GradCAMUnavailable as exc:
        gr.Info(str(exc))
        return None


def build_export(ctx: AppContext, ws_state) -> SimpleNamespace:
    c = SimpleNamespace()
    gr.Markdown(
        "Files are written into the run's own folder and offered for download. ONNX and pt2 take RGB "
        "images in [0, 1] of shape (N, 3, S, S) and normalise inside; the class names travel with each file."
    )
    with gr.Row():
        c.run = name_dropdown("Run", scale=3, elem_id="tl-export-run")
        c.refresh = gr.Button("Refresh runs", scale=1, size="sm")
    with gr.Row():
        c.safetensors = gr.Button("safetensors")
        # Without onnx/onnxscript the button is off and says why (the default install has them).
        c.onnx = gr.Button("ONNX" if ONNX_OK else "ONNX (not installed)", interactive=ONNX_OK,
                           elem_id="tl-export-onnx")
        c.pt2 = gr.Button("pt2 (torch.export)", elem_id="tl-export-pt2")
        c.metrics = gr.Button("Metrics CSV")
        c.card = gr.Button("Model card")
    with gr.Row():
        c.status = gr.Markdown("", elem_id="tl-export-status")
        c.stop_btn = gr.Button("Stop", variant="stop", size="sm", scale=0)
    c.timer = PollTimer(1.0, active=False)
    if not ONNX_OK:
        gr.Markdown(f"<small>{ONNX_MISSING}, then restart the app.</small>", elem_id="tl-export-onnx-hint")
    c.files = gr.File(label="Downloads", file_count="multiple", interactive=False, elem_id="tl-export-files")

    def export(fmt):
        def run_export(ws_id, run):
            """Export as a stoppable job (ONNX takes a while): the page follows it; an API client waits."""
            ws, path = _run(ctx, ws_id, run)

            def work(publish, check_stop):
                try:
                    if fmt in ("safetensors", "onnx", "pt2"):
                        out = export_run(path, fmt)
                        files = [str(out), str(out.with_suffix(out.suffix + ".json"))]
                    else:
                        found = _evaluation_files(path)
                        wanted = [p for k, p in found.items() if (fmt == "card") == (k == "model_card")]
                        if ctx.shared:  # the card and the tables name their server folders; downloads may not
                            for p in wanted:
                                if p.suffix in (".csv", ".md", ".json"):
                                    write_text(p, redact(p.read_text(encoding="utf-8")))
                        files = [str(p) for p in wanted]
                except (RunError, ExportError) as exc:
                    raise fail(str(exc)) from None
                check_stop()  # stopped meanwhile: the files are written, but not offered
                return files

            return background.run_for_caller(ws, EXPORT, work, lambda files: files, 1)

        return run_export

    def followed(ws_id):
        return background.followed(ctx.ws(ws_id), EXPORT)

    def tick(ws_id):
        job = background.current(ctx.ws(ws_id), EXPORT)
        if job is None or not job.done:
            return background.status_text(job, EXPORT), gr.Timer(active=job is not None), gr.skip()
        files = background.result(job)
        return (background.status_text(job, EXPORT), gr.Timer(active=False),
                files if files is not None else gr.skip())

    def stop(ws_id):
        return background.stop(ctx.ws(ws_id), EXPORT)

    for btn, fmt in ((c.safetensors, "safetensors"), (c.onnx, "onnx"), (c.pt2, "pt2"), (c.metrics, "metrics"),
                     (c.card, "card")):
        btn.click(guarded(export(fmt), 1), [ws_state, c.run], c.files, api_name=f"export_{fmt}") \
            .then(followed, [ws_state], [c.status, c.timer], api_visibility="private")
    c.timer.tick(guarded(tick, 3), [ws_state], [c.status, c.timer, c.files], api_visibility="private",
                 show_progress="hidden", concurrency_limit=None)
    c.stop_btn.click(guarded(stop, 1), [ws_state], [c.status], api_visibility="private")
    c.refresh.click(lambda ws_id, cur: run_dropdown(ctx.ws(ws_id), cur), [ws_state, c.run], c.run,
                    api_visibility="private")
    c.run.input(remember_run(ctx), [ws_state, c.run], None, api_visibility="private")
    return c


def _evaluation_files(run_path: Path) -> dict[str, Path]:
    """Metrics CSVs (training curves and validation metrics) and the model card."""
    from ..evaluate import evaluate_run, export_evaluation
    from ..runs import METRICS

    files = export_evaluation(evaluate_run(run_path))
    wanted = ("per_class.csv", "confusion.csv", "predictions.csv", "reliability.csv", "model_card.md")
    out = {name: Path(files[name]) for name in wanted if name in files}
    out["metrics.csv"] = run_path / METRICS  # the training curves
    return {("model_card" if k.endswith(".md") else k): v for k, v in out.items()}