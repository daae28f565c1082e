"""Tab 4, Train: hyper-parameters, Start/Stop, a status line and live curves.

Training runs in the engine's background job; the page polls it with a
``gr.Timer`` that reads the job's metrics snapshot (names cross, not
objects) and switches itself off when the job ends. A reload finds the job
again through the workspace, so the curves re-attach.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import gradio as gr
import pandas as pd

from .. import devices, train
from ..plan import PlanError
from ..progress import DECODING, EPOCH, EXTRACTING, FITTING, STEP
from ..states import validate
from . import session as S
from .context import AppContext, PollTimer, api, fail, guarded, redact, redact_all
from .stores import decoded

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
PHASE_WORDS = {DECODING: "Decoding images", EXTRACTING: "Extracting features (frozen layers, once)",
               FITTING: "Fitting the head (cross-validation on the training split)"}
# The form's fields, in the order of start_training's parameters after ws_id and model.
FORM_FIELDS = ("epochs", "batch_size", "lr", "optimizer", "schedule", "augment", "label_smoothing",
               "weight_decay", "early_stopping", "seed", "device")


def _fmt_eta(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}m {seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def phase_text(metrics) -> str:
    """Where a running job is, from its latest progress event: decoding, extracting, epoch k of n, step i of m."""
    event = metrics.progress_event()
    if event is None:
        return "starting (building the model)"
    rate = f" · {event.rate:.0f} {event.unit}/s" if event.rate else ""
    if event.phase in PHASE_WORDS:
        if event.phase == EXTRACTING and event.done >= event.total:
            return "fitting the head on the frozen features"
        eta = f" · ETA {_fmt_eta(event.eta)}" if event.eta is not None else ""
        return f"{PHASE_WORDS[event.phase]} · {event.done}/{event.total} {event.unit} ({event.fraction:.0%}){eta}"
    epoch = metrics.progress_event(EPOCH)
    if event.phase == STEP and epoch is not None:
        k, n = epoch.done + 1, epoch.total  # the epoch meter counts completed epochs
        eta = ""
        if event.rate:
            # This epoch's remaining steps, then the remaining epochs at the same rate.
            eta = f" · ETA {_fmt_eta((event.total - event.done + (n - k) * event.total) / event.rate)}"
        return f"epoch {min(k, n)}/{n} · step {event.done}/{event.total}{rate}{eta}"
    return f"{event.phase} {event.done}/{event.total} {event.unit}{rate}"


def status_line(job: train.Job | None) -> str:
    if job is None:
        return "No training yet."
    s = job.snapshot()
    run = f" · run `{job.run_dir.name}`" if job.run_dir else ""
    if s["status"] == train.QUEUED:
        return f"**Queued** · position {s['queue_position']} in the {s['device']} queue (one job per device){run}"
    if s["status"] in (train.RUNNING, train.STOPPING):
        event = job.metrics.progress_event()
        if s["status"] == train.RUNNING and event is not None and event.phase in PHASE_WORDS \
                and not (event.phase == EXTRACTING and event.done >= event.total):
            # Before the first step: the phase itself leads, as the CLI shows it.
            words, rest = phase_text(job.metrics).split(" · ", 1)
            return f"**{words}** · {rest}{run}"
        word = "Stopping" if s["status"] == train.STOPPING else "Running"
        return f"**{word}** · {phase_text(job.metrics)}{run}"
    if s["status"] == train.FAILED:
        return f"**Failed:** {redact(s['error'])}{run}"
    r = job.result
    if r.summary.get("selected_on") == "train-cv" and r.validated:
        word = "Finished" if s["status"] == train.FINISHED else "Stopped"
        return (f"**{word}** · the head was fitted to convergence on the frozen features in {r.train_seconds:.1f}s "
                f"(L2 {r.summary.get('l2'):.3g} by cross-validation on the training images) · val accuracy "
                f"{r.best_val_accuracy:.3f}{run}")
    best = "not validated" if not r.validated else f"best val accuracy {r.best_val_accuracy:.3f} (epoch {r.best_epoch})"
    word = "Finished" if s["status"] == train.FINISHED else "Stopped"
    return f"**{word}** · {r.epochs_run} epoch(s) in {r.train_seconds:.1f}s · {best} · {r.images_per_second:.0f} img/s{run}"


def curves(job: train.Job | None) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """Long-format frames for the loss and accuracy plots (x in epochs).

    None, never an empty frame, while there is nothing to draw: a Gradio plot
    that first receives an empty frame draws no lines afterwards (seen in 6.31).
    """
    if job is None:
        return None, None
    snap = job.metrics.snapshot()
    steps, epochs = snap["steps"], snap["epochs"]
    spe = job.metrics.progress().get("steps_per_epoch") or 1
    x = steps["step"] / spe
    loss = [pd.DataFrame({"epoch": x, "value": steps["loss"], "series": "train loss (per step)"})]
    acc = []
    if len(epochs):
        loss.append(pd.DataFrame({"epoch": epochs["epoch"], "value": epochs["val_loss"], "series": "validation loss"}))
        acc.append(pd.DataFrame({"epoch": epochs["epoch"], "value": epochs["train_accuracy"], "series": "train"}))
        acc.append(pd.DataFrame({"epoch": epochs["epoch"], "value": epochs["val_accuracy"], "series": "validation"}))
    elif len(steps):
        # The browser fixes a plot's series (its colour domain) when it first
        # draws it and only swaps the data afterwards (Gradio 6.31), so the
        # validation series is present from the first frame: one point on the
        # first training point, which a line cannot draw.
        loss.append(pd.DataFrame({"epoch": x.iloc[:1], "value": steps["loss"].iloc[:1], "series": "validation loss"}))
    loss_df = pd.concat(loss, ignore_index=True) if len(steps) else None
    acc_df = pd.concat(acc, ignore_index=True) if acc else None
    return loss_df, acc_df


# The same colour for a series in every run. Set once in the constructors: a
# colour map sent with new data makes the browser redraw before that data has
# arrived (Gradio 6.31).
LOSS_COLOURS = {"train loss (per step)": "#5b8def", "validation loss": "#f28e2b"}
ACC_COLOURS = {"train": "#5b8def", "validation": "#f28e2b"}


def public_snapshot(job: train.Job) -> dict:
    """What an API client holding the job id sees: the run's name, never a server path
    (a workspace's path holds its id, and the id grants its files)."""
    snap = job.snapshot()
    snap.pop("run_dir", None)
    snap["run"] = job.run_dir.name if job.run_dir else None
    return redact_all(snap)


def current_job(ws) -> train.Job | None:
    job_id = ws.session.job_id if ws.session is not None else None
    if not job_id:
        return None
    try:
        return train.REGISTRY.get(job_id)
    except train.JobNotFound:
        return None


def form_values(config: train.TrainConfig) -> tuple:
    """The form's values for a config (a running job's after a reload, else the session's)."""
    return tuple(getattr(config, f) for f in FORM_FIELDS)


def config_from_form(settings: train.TrainConfig, epochs, batch_size, lr, optimizer, schedule, augment, smoothing,
                     wd, early, seed, device) -> train.TrainConfig:
    """The session's settings with the form's values; a bad value names its field."""
    from dataclasses import replace

    try:
        config = replace(
            settings, epochs=int(epochs), batch_size=int(batch_size), lr=float(lr), optimizer=optimizer,
            schedule=schedule, augment=augment, label_smoothing=float(smoothing), weight_decay=float(wd),
            early_stopping=int(early or 0), seed=int(seed or 0), device=device,
        )
        devices.resolve(config.device)
    except (train.ConfigError, ValueError, TypeError, OverflowError) as exc:
        raise fail(str(exc)) from None
    return config


def start(ws, model: str, config: train.TrainConfig) -> train.Job:
    """Start training the session's plan on the session's data: the job gets its own plan, data and config."""
    with ws.lock:
        job = current_job(ws)
        if job is not None and not job.done:
            raise fail(f"A job is already {job.status} in this workspace; stop it before starting another")
        s = S.with_model(ws.session, model)
        if s.dataset is None:
            raise fail("Data: load a dataset first (tab 1)")
        plan, dataset = s.plan, s.dataset
        try:
            validate(plan)
        except PlanError as exc:
            raise fail(str(exc)) from None
        run_dir = ws.new_run_path(plan.model)
        job = train.start_job(plan, config, lambda publish: decoded(ws, plan.model, dataset, publish=publish),
                              run_dir=run_dir, label=run_dir.name)
        ws.job_ids.append(job.id)
        ws.session = S.with_job(s, job.id, config)
    return job


def build(ctx: AppContext, ws_state, model_dd) -> SimpleNamespace:
    c = SimpleNamespace()
    d = train.TrainConfig()
    with gr.Row():
        c.epochs = gr.Number(label="Epochs", value=d.epochs, precision=0, minimum=1, maximum=1000, elem_id="tl-epochs")
        c.batch_size = gr.Number(label="Batch size", value=d.batch_size, precision=0, minimum=1, maximum=4096)
        c.lr = gr.Number(label="Learning rate", value=d.lr, minimum=1e-7, maximum=10)
        c.optimizer = gr.Radio(label="Optimizer", choices=["adamw", "sgd"], value=d.optimizer)
        c.schedule = gr.Radio(label="Schedule", choices=["cosine", "onecycle", "constant"], value=d.schedule)
    with gr.Row():
        c.augment = gr.Radio(label="Augmentation", choices=["none", "light", "strong"], value=d.augment)
        c.label_smoothing = gr.Slider(label="Label smoothing", minimum=0, maximum=0.5, step=0.05,
                                      value=d.label_smoothing)
        c.weight_decay = gr.Number(label="Weight decay", value=d.weight_decay, minimum=0, maximum=1)
        c.early = gr.Number(label="Early stopping patience (0 = off)", value=d.early_stopping, precision=0, minimum=0)
        c.seed = gr.Number(label="Seed", value=d.seed, precision=0, minimum=0)
        c.device = gr.Dropdown(label="Device", choices=devices.choices(), value=d.device)
    with gr.Row():
        c.start_btn = gr.Button("Start training", variant="primary", elem_id="tl-start")
        c.stop_btn = gr.Button("Stop", variant="stop", elem_id="tl-stop")
    c.status = gr.Markdown("No training yet.", elem_id="tl-status", label="Training status")
    c.job_id = gr.Textbox(label="Job id", interactive=False, visible="hidden")
    with gr.Row():
        c.loss_plot = gr.LinePlot(
            x="epoch", y="value", color="series", title="Loss", height=300, elem_id="tl-loss", label="Loss curves",
            x_title="epoch", y_title="loss", color_map=LOSS_COLOURS,
        )
        c.acc_plot = gr.LinePlot(
            x="epoch", y="value", color="series", title="Accuracy", height=300, elem_id="tl-acc",
            label="Accuracy curves",
            x_title="epoch", y_title="accuracy", y_lim=[0, 1], color_map=ACC_COLOURS,
        )
    c.timer = PollTimer(POLL_SECONDS, active=False)
    c.settings = [c.epochs, c.batch_size, c.lr, c.optimizer, c.schedule, c.augment, c.label_smoothing,
                  c.weight_decay, c.early, c.seed, c.device]

    # Its parameters' names are what view_api() shows API clients.
    def start_training(ws_id, model, epochs, batch_size, lr, optimizer, schedule, augment, label_smoothing,
                       weight_decay, early_stopping, seed, device):
        ws = ctx.ws(ws_id)
        config = config_from_form(ws.session.settings, epochs, batch_size, lr, optimizer, schedule, augment,
                                  label_smoothing, weight_decay, early_stopping, seed, device)
        job = start(ws, model, config)
        loss, acc = curves(job)
        return status_line(job), job.id, loss, acc, gr.Timer(active=True)

    def tick(ws_id):
        ws = ctx.ws(ws_id)
        job = current_job(ws)
        loss, acc = curves(job)
        active = job is not None and not job.done
        return status_line(job), loss, acc, gr.Timer(active=active)

    def stop(ws_id):
        ws = ctx.ws(ws_id)
        job = current_job(ws)
        if job is None or job.done:
            raise fail("There is no running job in this workspace to stop")
        job.stop()
        return status_line(job)

    c.tick = tick
    c.start_event = c.start_btn.click(
        guarded(start_training, 5), [ws_state, model_dd, *c.settings],
        [c.status, c.job_id, c.loss_plot, c.acc_plot, c.timer], api_name="start_training",
    )
    c.timer.tick(guarded(tick, 4), [ws_state], [c.status, c.loss_plot, c.acc_plot, c.timer],
                 api_visibility="private", concurrency_limit=None, show_progress="hidden")
    c.stop_btn.click(guarded(stop, 1), [ws_state], [c.status], api_name="stop_training")

    # API clients hold the job id from start_training and pass it in.
    def poll_job(job_id: str) -> dict:
        """A job whose id you hold: id, status, error, queue_position, progress, epochs (one row of metrics
        per epoch) and, once it ended, summary."""
        try:
            job = train.REGISTRY.get(job_id)
        except (train.JobNotFound, TypeError) as exc:
            raise fail(str(exc.args[0])) from None
        snap = public_snapshot(job)
        snap["epochs"] = job.metrics.snapshot()["epochs"].to_dict(orient="records")
        summary = getattr(job.result, "summary", None)
        snap["summary"] = redact_all(summary) if summary is not None else None
        return snap

    def stop_job(job_id: str) -> dict:
        """Ask a job whose id you hold to stop (within one batch)."""
        try:
            job = train.REGISTRY.get(job_id)
        except (train.JobNotFound, TypeError) as exc:
            raise fail(str(exc.args[0])) from None
        job.stop()
        return public_snapshot(job)

    api(guarded(poll_job, 1), "poll_job", concurrency_limit=None,
        returns="job")
    api(guarded(stop_job, 1), "stop_job", concurrency_limit=None, returns="job")
    return c
