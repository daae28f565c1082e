"""Progress on stderr from the one Progress event: lines in a pipe, a moving bar on a terminal."""

from __future__ import annotations

import io
import time

from tl_studio.cli.progress import JobProgress, ProgressView, follow_job
from tl_studio.progress import Meter


class Clock:
    """Seconds a test sets by hand, for the view's pace (time.monotonic)."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_pipe_gets_a_line_per_phase_start_every_few_seconds_and_one_at_the_end(monkeypatch):
    clock = Clock()
    monkeypatch.setattr("tl_studio.cli.progress.time.monotonic", clock)
    out = io.StringIO()
    view = ProgressView(out, tty=False, interval=5.0)
    decoding = Meter("decoding", 100, "images", view)
    for done in range(0, 101):
        clock.now = done * 0.1  # 10 s in all: a line at the start, one after 5 s, one at the end
        decoding.update(done)
    decoding.update(100)  # the same end again (a last poll): not a second line
    extracting = Meter("extracting", 10, "images", view)
    for done in range(11):
        extracting.update(done)
    lines = out.getvalue().splitlines()
    assert [ln.split(":")[0] for ln in lines] == ["decoding images"] * 3 + ["extracting features"] * 2
    assert lines[0].startswith("decoding images: 0/100 images (0%)")
    assert lines[1].startswith("decoding images: 50/100 images (50%)")
    assert lines[2].startswith("decoding images: 100/100 images (100%)") and "left" not in lines[2]
    assert lines[-1].startswith("extracting features: 10/10 images (100%)")
    assert len(set(lines)) == len(lines) and "\r" not in out.getvalue()


def test_a_terminal_gets_a_bar_that_moves_with_every_step():
    out = io.StringIO()
    with ProgressView(out, tty=True) as view:
        meter = Meter("extracting", 4, "images", view)
        for done in range(5):
            meter.update(done)
            time.sleep(0.12)  # tqdm redraws at most every 0.1 s
        view.message("a note between the bars")
    text = out.getvalue()
    frames = [f for f in text.split("\r") if "extracting features" in f]
    for done in range(1, 5):
        assert any(f"{done}/4" in f for f in frames), (done, frames)
    assert "100%" in frames[-1] and "a note between the bars" in text


def test_a_training_job_shows_steps_across_epochs(tmp_path):
    """A real job (cached head-only training): the bar's total is every step of every epoch."""
    from tl_studio.plan import Plan
    from tl_studio.train import JobRegistry, TrainConfig, start_job

    from .trainkit import demo_data

    data = demo_data()
    job = start_job(Plan.head_only("efficientnet_lite0", len(data.classes)),
                    TrainConfig(epochs=3, batch_size=64, device="cpu", head_solver="sgd"), data,
                    registry=JobRegistry())
    out = io.StringIO()
    follow_job(job, ProgressView(out, tty=False), poll=0.05)
    event, note = JobProgress(job).current()
    steps = -(-len(data.train_idx) // 64)
    assert (event.phase, event.done, event.total) == ("training", 3 * steps, 3 * steps)
    assert note.startswith("epoch 3/3; epoch 3: val acc")
    last = out.getvalue().splitlines()[-1]
    assert last.startswith(f"training: {3 * steps}/{3 * steps} steps (100%)")
    assert out.getvalue().count("(100%)") == len({ln.split(":")[0] for ln in out.getvalue().splitlines()
                                                  if "(100%)" in ln})  # each phase ends once
