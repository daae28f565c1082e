"""Tab 1, Data: the demo dataset, a zip, or classes filled by upload or webcam."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pandas as pd
from PIL import Image

from ..data import DatasetBuilder, DatasetError, load_dataset
from . import session as S
from .context import DEMO_DATA, AppContext, fail, guarded, name_dropdown

log = logging.getLogger(__name__)

SAMPLES_PER_CLASS = 4


def _progress_cb(progress: gr.Progress):
    return lambda frac, message: progress(frac, desc=message)


def dataset_views(ws) -> tuple:
    """Everything the tab shows about the workspace's current dataset."""
    ds = ws.session.dataset
    if ds is None:
        empty = pd.DataFrame()
        # None, never an empty frame: a Gradio plot first given an empty frame
        # draws nothing afterwards (seen in 6.31).
        return ("No dataset loaded yet.", empty, None, [], empty, empty)
    s = ds.summary
    c = s.counts
    info = (
        f"**{c['images']} images in {c['classes']} classes** "
        f"({c['train']} for training, {c['val']} for validation; split: {s.split}). "
        f"{c['skipped']} file(s) skipped, {c['warnings']} warning(s)."
    )
    counts = s.classes[["class", "images", "train", "val", "median_width", "median_height"]]
    gallery = []
    for label, name in enumerate(ds.classes):
        items = [it for it in ds.items if it.label == label][:SAMPLES_PER_CLASS]
        gallery += [(str(it.path), name) for it in items]
    bars = pd.DataFrame({"label": s.classes["class"].astype(str), "images": s.classes["images"].astype(float)})
    return info, counts, bars, gallery, s.skipped, s.warnings


def build(ctx: AppContext, ws_state) -> SimpleNamespace:
    c = SimpleNamespace()
    gr.Markdown(
        "Bring images in one of three ways. Each folder name (or class you add) is a class; "
        "bad files are skipped and listed, the rest loads."
    )
    with gr.Row():
        with gr.Column(scale=1):
            c.demo_btn = gr.Button("Load the demo dataset", variant="primary")
            c.zip_file = gr.File(label="…or upload a .zip (one folder per class)", file_types=[".zip"], type="filepath")
        with gr.Column(scale=2):
            with gr.Accordion("…or build classes from uploads and the webcam", open=False):
                with gr.Row():
                    c.class_name = gr.Textbox(label="New class name", scale=3)
                    c.add_class_btn = gr.Button("Add class", scale=1)
                with gr.Row():
                    c.class_dd = name_dropdown("Class", scale=3)
                    c.remove_class_btn = gr.Button("Remove class", scale=1, variant="stop")
                c.class_files = gr.File(label="Images for this class", file_count="multiple", type="filepath")
                with gr.Row():
                    c.webcam = gr.Image(label="Webcam", sources=["webcam"], type="numpy", streaming=True, height=240)
                    with gr.Column():
                        c.capture_btn = gr.Button("Capture one")
                        c.burst = gr.Button("Hold to capture a burst", elem_id="tl-burst")
                        c.bursting = gr.Checkbox(value=False, visible="hidden", elem_id="tl-bursting")
                        c.class_counts = gr.Markdown("", label="Classes so far")
                c.use_classes_btn = gr.Button("Use these classes as the dataset", variant="primary")
    c.info = gr.Markdown("No dataset loaded yet.", label="Dataset summary")
    with gr.Row():
        c.counts = gr.Dataframe(label="Images per class", interactive=False, wrap=True)
        c.bar = gr.BarPlot(x="label", y="images", title="Images per class", x_title="class", y_lim=[0, None], height=260,
                           label="Class sizes (bar chart)")
    c.gallery = gr.Gallery(label="Samples per class", columns=8, height="auto", object_fit="cover")
    with gr.Row():
        c.skipped = gr.Dataframe(label="Skipped files", interactive=False, wrap=True)
        c.warnings = gr.Dataframe(label="Warnings", interactive=False, wrap=True)
    views = [c.info, c.counts, c.bar, c.gallery, c.skipped, c.warnings]
    c.views = views

    # ---- handlers --------------------------------------------------------------------
    def use(ws, make):
        """Load a dataset with ``make()``; on a bad input the previous dataset stays."""
        try:
            dataset = make()
        except DatasetError as exc:
            raise fail(str(exc)) from None
        with ws.lock:
            ws.session = S.with_dataset(ws.session, dataset)
        return dataset_views(ws)

    def load_demo(ws_id, progress=gr.Progress()):
        ws = ctx.ws(ws_id)
        return use(ws, lambda: load_dataset(DEMO_DATA, progress=_progress_cb(progress)))

    def upload_zip(ws_id, path, progress=gr.Progress()):
        if not path:
            return tuple(gr.skip() for _ in views)
        ws = ctx.ws(ws_id)
        if not str(path).lower().endswith(".zip"):
            raise fail(f"{Path(path).name}: not a .zip archive")
        return use(ws, lambda: load_dataset(path, workdir=ws.data_dir / "imports", progress=_progress_cb(progress)))

    def builder_of(ws):
        if ws.builder is None:
            ws.builder = DatasetBuilder(ws.data_dir / "classes")
        return ws.builder

    def class_view(ws, selected=None):
        b = builder_of(ws)
        counts = b.counts()
        text = ", ".join(f"{k}: {v}" for k, v in counts.items()) or "no classes yet"
        choices = list(counts)
        value = selected if selected in choices else (choices[-1] if choices else None)
        return gr.Dropdown(choices=choices, value=value), f"Classes so far: {text}"

    def add_class(ws_id, name):
        ws = ctx.ws(ws_id)
        try:
            added = builder_of(ws).add_class(name or "")
        except DatasetError as exc:
            raise fail(str(exc)) from None
        dd, text = class_view(ws, added)
        return dd, text, ""

    def remove_class(ws_id, name):
        ws = ctx.ws(ws_id)
        if not name:
            raise fail("Class: choose a class to remove")
        try:
            builder_of(ws).remove_class(name)
        except DatasetError as exc:
            raise fail(str(exc)) from None
        return class_view(ws)

    def add_files(ws_id, name, files, progress=gr.Progress()):
        if not files:
            return gr.skip(), gr.skip(), gr.skip()
        ws = ctx.ws(ws_id)
        if not name:
            raise fail("Class: add or choose a class before uploading its images")
        try:
            report = builder_of(ws).add_images(name, files, progress=_progress_cb(progress))
        except DatasetError as exc:
            raise fail(str(exc)) from None
        if report.skipped:
            gr.Warning(
                "Skipped: " + "; ".join(f"{Path(f).name}: {why}" for f, why in report.skipped[:5])
                + (" …" if len(report.skipped) > 5 else "")
            )
        dd, text = class_view(ws, name)
        return dd, text, None

    def capture(ws_id, name, frame):
        if frame is None:
            return gr.skip(), gr.skip()
        ws = ctx.ws(ws_id)
        if not name:
            raise fail("Class: add or choose a class before capturing")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "webcam.jpg"
            Image.fromarray(np.asarray(frame, dtype=np.uint8)).convert("RGB").save(path, quality=92)
            try:
                builder_of(ws).add_images(name, [path])
            except DatasetError as exc:
                raise fail(str(exc)) from None
        return class_view(ws, name)

    def burst_frame(ws_id, name, frame, bursting):
        if not bursting or frame is None or not name:
            return gr.skip(), gr.skip()
        return capture(ws_id, name, frame)

    def use_classes(ws_id, progress=gr.Progress()):
        ws = ctx.ws(ws_id)
        return use(ws, lambda: builder_of(ws).dataset(progress=_progress_cb(progress)))

    n = len(views)
    c.load_demo, c.upload_zip, c.use_classes = load_demo, upload_zip, use_classes
    c.demo_event = c.demo_btn.click(guarded(load_demo, n), [ws_state], views, api_name="load_demo")
    c.zip_event = c.zip_file.upload(guarded(upload_zip, n), [ws_state, c.zip_file], views, api_name="upload_zip")
    c.add_class_btn.click(guarded(add_class, 3), [ws_state, c.class_name], [c.class_dd, c.class_counts, c.class_name],
                          api_name="add_class")
    c.remove_class_btn.click(guarded(remove_class, 2), [ws_state, c.class_dd], [c.class_dd, c.class_counts],
                             api_name="remove_class")
    c.class_files.upload(guarded(add_files, 3), [ws_state, c.class_dd, c.class_files],
                         [c.class_dd, c.class_counts, c.class_files], api_name="add_images")
    c.capture_btn.click(guarded(capture, 2), [ws_state, c.class_dd, c.webcam], [c.class_dd, c.class_counts],
                        api_visibility="private")
    # The hold-to-burst button flips a hidden checkbox on press and release (see BURST_JS);
    # while it is set, every streamed webcam frame is added to the class.
    c.webcam.stream(
        guarded(burst_frame, 2),
        [ws_state, c.class_dd, c.webcam, c.bursting],
        [c.class_dd, c.class_counts],
        stream_every=0.25,
        api_visibility="private",
        concurrency_limit=None,
    )
    c.use_event = c.use_classes_btn.click(guarded(use_classes, n), [ws_state], views, api_name="use_classes")
    return c


# Press-and-hold for the burst button: set the hidden checkbox while the pointer is down.
BURST_JS = """
() => {
  const bind = () => {
    const btn = document.querySelector('#tl-burst');
    const box = document.querySelector('#tl-bursting input');
    if (!btn || !box) { setTimeout(bind, 500); return; }
    const set = (v) => { if (box.checked !== v) { box.checked = v; box.dispatchEvent(new Event('input', {bubbles: true})); box.dispatchEvent(new Event('change', {bubbles: true})); } };
    btn.addEventListener('pointerdown', () => set(true));
    ['pointerup', 'pointerleave', 'pointercancel'].forEach(e => btn.addEventListener(e, () => set(false)));
  };
  bind();
}
"""
