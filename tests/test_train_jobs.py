"""Training jobs in real background threads: stop, crash, NaN, OOM halving, queueing."""

from __future__ import annotations

import json
import threading

import pytest
import torch

from tl_studio.plan import Plan
from tl_studio.progress import Progress
from tl_studio.surgery import body_layer_names
from tl_studio.train import (
    FAILED,
    FINISHED,
    QUEUED,
    RUNNING,
    STOPPED,
    ConfigError,
    Job,
    JobNotFound,
    JobRegistry,
    TrainConfig,
    start_job,
)
from tl_studio.runs import SUMMARY, WEIGHTS, load_weights, status

from .trainkit import demo_data

# Mechanics tests use a small, fast network with random weights.
FAST = "mobilenet_v3_small"


def _plan():
    names = body_layer_names(FAST)
    return Plan.freeze_upto(FAST, 4, names, names[3])


def _cfg(**kw):
    base = dict(epochs=2, batch_size=4, cache="off", device="cpu", sync_every=2)
    base.update(kw)
    return TrainConfig(**base)


def _start(registry, config, callbacks=(), run_dir=None, data=None, plan=None):
    return start_job(
        plan or _plan(),
        config,
        data or demo_data(4, 2),
        run_dir=run_dir,
        pretrained=False,
        callbacks=callbacks,
        registry=registry,
    )


def test_stop_takes_effect_within_one_batch_and_hands_over_the_model(tmp_path):
    registry = JobRegistry()
    started = []

    def stop_on_third_batch(trainer, event, info):
        if event == "batch":
            started.append(info["step"])
            if len(started) == 3:
                job.stop()  # set while batch 3 is about to run

    job = _start(registry, _cfg(), [stop_on_third_batch], run_dir=tmp_path / "run")
    assert job.wait(120)
    assert job.status == STOPPED
    # Batch 3 finished; no batch started after the stop.
    assert started == [0, 1, 2]
    assert job.result.status == "stopped"
    assert job.result.validated is False  # stopped inside epoch 1, before any validation
    state, meta = load_weights(tmp_path / "run" / WEIGHTS)
    assert meta["validated"] == "false" and state
    assert job.result.state is None  # handed over on disk; the job keeps no copy


def test_stop_from_another_thread(tmp_path):
    registry = JobRegistry()
    running = threading.Event()

    def signal(trainer, event, info):
        if event == "batch" and info["step"] == 1:
            running.set()

    job = _start(registry, _cfg(epochs=50), [signal])
    assert running.wait(120)
    steps_at_stop = job.metrics.progress().get("global_step", 0)
    job.stop()
    assert job.wait(60)
    assert job.status == STOPPED
    # At most the batch in flight completed after the stop.
    assert job.result.summary["epochs_run"] <= 1
    assert job.metrics.progress().get("global_step", 0) <= max(steps_at_stop, 1) + 2


def test_a_crash_in_the_thread_fails_the_job_not_the_process():
    registry = JobRegistry()

    def boom(trainer, event, info):
        if event == "batch" and info["step"] == 2:
            raise RuntimeError("simulated crash in the loop")

    job = _start(registry, _cfg(), [boom])
    assert job.wait(120)
    assert job.status == FAILED
    assert "simulated crash in the loop" in job.error
    # The process and the registry go on: another job runs to the end.
    job2 = _start(registry, _cfg(epochs=1))
    assert job2.wait(120) and job2.status == FINISHED


def test_nan_loss_stops_the_job_and_names_the_step(tmp_path):
    registry = JobRegistry()

    def overflow(trainer, event, info):
        # What a learning rate far too high does after a step (the largest one a
        # config accepts, 10, needs many steps for it): trained weights overflow.
        if event == "batch" and info["step"] == 1:
            with torch.no_grad():
                next(p for p in trainer.model.parameters() if p.requires_grad).fill_(float("inf"))

    cfg = _cfg(optimizer="sgd", momentum=0.0, warmup_epochs=0, schedule="constant", label_smoothing=0.0)
    job = _start(registry, cfg, [overflow], run_dir=tmp_path / "run")
    assert job.wait(120)
    assert job.status == FAILED
    assert "NonFiniteLoss" in job.error and "at step" in job.error
    # The run says it failed and why, rather than looking unfinished forever.
    summary = json.loads((tmp_path / "run" / SUMMARY).read_text())
    assert summary["status"] == "failed" and summary["error"] == job.error
    assert status(tmp_path / "run") == "failed"
    # No checkpoint is ever written from NaN weights.
    weights = tmp_path / "run" / WEIGHTS
    if weights.exists():
        state, _ = load_weights(weights)
        assert all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())


def test_cuda_oom_halves_the_batch_and_retries():
    registry = JobRegistry()
    sizes = []

    def oom_above_4(trainer, event, info):
        if event == "batch":
            sizes.append(info["batch_size"])
            if trainer.batch_size > 4:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    job = _start(registry, _cfg(batch_size=16, epochs=1), [oom_above_4])
    assert job.wait(120)
    assert job.status == FINISHED, job.error
    assert job.result.batch_size == 4
    assert sizes[:2] == [16, 8] and set(sizes[2:]) <= {4}


def test_cuda_oom_at_the_floor_fails_clearly():
    registry = JobRegistry()

    def always_oom(trainer, event, info):
        if event == "batch":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    job = _start(registry, _cfg(batch_size=8, min_batch_size=4, epochs=1), [always_oom])
    assert job.wait(120)
    assert job.status == FAILED
    assert "out of memory even at batch size 4" in job.error


def test_two_jobs_queue_behind_one_device_slot(tmp_path):
    registry = JobRegistry()
    release = threading.Event()
    first_running = threading.Event()

    def hold(trainer, event, info):
        if event == "batch" and info["step"] == 0:
            first_running.set()
            assert release.wait(120)

    a = _start(registry, _cfg(epochs=1), [hold], run_dir=tmp_path / "a")
    assert first_running.wait(120)
    b = _start(registry, _cfg(epochs=1), run_dir=tmp_path / "b")
    c = _start(registry, _cfg(epochs=1), run_dir=tmp_path / "c")
    assert a.status == RUNNING and a.queue_position() == 0
    assert b.status == QUEUED and b.queue_position() == 1
    assert c.status == QUEUED and c.queue_position() == 2
    # A queued job's run counts as running too (nobody may delete it from under the job).
    assert [status(tmp_path / r) for r in "abc"] == ["running"] * 3
    c.stop()  # leaves the queue at once, without running
    assert c.status == STOPPED and c.wait(1)
    assert status(tmp_path / "c") == "empty" and not (tmp_path / "c").exists()  # let go at once, nothing left
    assert b.queue_position() == 1
    release.set()
    assert a.wait(120) and b.wait(120)
    assert a.status == FINISHED and b.status == FINISHED
    assert b.started >= a.finished
    assert c.started is None
    assert status(tmp_path / "a") == status(tmp_path / "b") == "finished"


def test_job_ids_are_unguessable_and_private():
    registry = JobRegistry()
    job = _start(registry, _cfg(epochs=1))
    assert len(job.id) >= 20
    assert registry.get(job.id) is job
    with pytest.raises(JobNotFound):
        registry.get(job.id[:-1] + ("A" if job.id[-1] != "A" else "B"))
    job.wait(120)



def test_a_data_factory_runs_in_the_job_and_may_publish_its_progress():
    registry = JobRegistry()

    def decode(publish):
        publish(Progress("decoding", 24, 24, "images", 100.0, 0.0))
        return demo_data(4, 2)

    with_publisher = _start(registry, _cfg(epochs=1), data=decode)
    without = _start(registry, _cfg(epochs=1), data=lambda: demo_data(4, 2))  # the older form still works
    assert with_publisher.wait(120) and without.wait(120)
    assert with_publisher.status == without.status == FINISHED
    assert with_publisher.metrics.progress_event("decoding").done == 24
    assert without.metrics.progress_event("decoding") is None


def test_done_jobs_let_go_and_the_registry_forgets_the_oldest(tmp_path):
    registry = JobRegistry(keep_done=2)
    kept = _start(registry, _cfg(epochs=1))  # no run folder: its weights exist only here
    on_disk = _start(registry, _cfg(epochs=1), run_dir=tmp_path / "run")
    assert kept.wait(120) and on_disk.wait(120)
    assert kept.status == on_disk.status == FINISHED
    assert kept.result.state and on_disk.result.state is None  # on disk: dropped
    assert kept.work is None and on_disk.work is None  # and with it the data they trained on
    assert on_disk.result.summary["status"] == "finished" and len(on_disk.metrics.snapshot()["epochs"]) == 1
    kept.release()
    assert kept.result.state is None
    later = [Job(lambda job: None, device_key="test-history") for _ in range(2)]
    for job in later:
        registry.submit(job)
        assert job.wait(30)
    assert len(registry) == 2 and all(registry.get(job.id) is job for job in later)
    for gone in (kept, on_disk):
        with pytest.raises(JobNotFound):
            registry.get(gone.id)


@pytest.mark.parametrize(
    "setting, message",
    [
        ({"seed": 2**80}, "seed: must be a whole number from 0 to 18446744073709551615"),
        ({"seed": -1}, "seed: must be a whole number"),
        ({"epochs": 10**9}, "epochs: must be a whole number from 1 to 10000"),
        ({"batch_size": 0}, "batch_size: must be a whole number from 1"),
        ({"lr": 1e30}, r"lr: must be in \(0, 10\]"),
        ({"lr": float("nan")}, "lr: must be a finite number"),
        ({"momentum": 1.0}, r"momentum: must be in \[0, 1\)"),
        ({"memory_budget_mb": 2**40}, "memory_budget_mb: must be null .automatic. or a whole number"),
        ({"amp": "yes"}, "amp: must be true or false"),
    ],
)
def test_every_number_is_range_checked_before_a_job_starts(setting, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**setting)
    assert TrainConfig(seed=2**64 - 1).seed == 2**64 - 1  # the largest seed torch takes
