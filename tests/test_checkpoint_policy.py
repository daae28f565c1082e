"""Checkpoints are written at most every CHECKPOINT_SECONDS, and a resume stays exact."""

from __future__ import annotations

import torch

from tl_studio.plan import Plan
from tl_studio.surgery import body_layer_names
from tl_studio.train import JobRegistry, Trainer, TrainConfig, checkpoint, start_job
from tl_studio.runs import LAST, WEIGHTS, load_last, load_weights, read_tables

from .trainkit import demo_data

FAST = "mobilenet_v3_small"


def test_stop_between_checkpoints_then_resume_trains_the_same(tmp_path, monkeypatch):
    # Never due by time: last.pt is written after the first epoch and when a stop is asked for.
    monkeypatch.setattr(checkpoint, "CHECKPOINT_SECONDS", 1e9)
    names = body_layer_names(FAST)
    plan = Plan.freeze_upto(FAST, 4, names, names[6])
    data = demo_data(6, 3)  # 24 training images: 3 batches of 8 per epoch
    cfg = TrainConfig(epochs=4, batch_size=8, lr=1e-3, device="cpu", cache="off")
    straight = Trainer(plan, cfg, data, pretrained=False).fit()

    registry = JobRegistry()

    def stop_in_the_third_epoch(trainer, event, info):
        if event == "batch" and info["epoch"] == 2 and trainer.step % 3 == 1:
            job.stop()  # mid-epoch: the epoch is lost, the checkpoint is the first epoch's

    job = start_job(plan, cfg, data, run_dir=tmp_path, pretrained=False, callbacks=[stop_in_the_third_epoch],
                    registry=registry)
    assert job.wait(300) and job.status == "stopped"
    assert int(load_last(tmp_path / LAST)["epoch"]) == 0  # epoch 2 (index 1) was not due
    assert list(read_tables(tmp_path)["epochs"]["epoch"]) == [1, 2]
    _, meta = load_weights(tmp_path / WEIGHTS)
    assert meta["validated"] == "true" and meta["epoch"] in ("1", "2")  # the best, flushed at the stop

    resumed = Trainer(plan, cfg, data, run_dir=tmp_path, pretrained=False, resume=True)
    result = resumed.fit()
    # epoch 2 is trained again, not listed twice
    assert list(resumed.metrics.snapshot()["epochs"]["epoch"]) == [1, 2, 3, 4]
    steps = resumed.metrics.snapshot()["steps"]["step"].tolist()
    assert steps == sorted(set(steps)) and steps[-1] == 12
    # the same training as without the stop, and the same best epoch with the same weights
    assert result.validated and result.best_epoch == straight.best_epoch
    for k, v in straight.state.items():
        if v.is_floating_point():
            torch.testing.assert_close(result.state[k], v, rtol=1e-4, atol=1e-5)
    assert int(load_last(tmp_path / LAST)["epoch"]) == 3  # the last epoch always checkpoints


def test_the_best_weights_copy_survives_later_training_and_phases():
    """``Snapshots.take`` copies only what the phase trains; no later step or unfreezing may alter a copy."""
    names = body_layer_names(FAST)
    plan = Plan.freeze_upto(FAST, 4, names, names[6], unfreeze_all_at=1)  # epoch 2 on: every layer trains
    data = demo_data(4, 2)
    cfg = TrainConfig(epochs=3, batch_size=8, lr=1e-3, device="cpu", cache="off")
    taken = []

    def at_each_epoch(trainer, event, info):
        if event == "epoch":
            truth = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
            taken.append((trainer.snapshots.take(), truth))

    Trainer(plan, cfg, data, pretrained=False, callbacks=[at_each_epoch]).fit()
    assert len(taken) == 3
    for state, truth in taken:
        assert state.keys() == truth.keys()
        for k, v in truth.items():
            assert torch.equal(state[k], v), k
    # the stem, frozen in epoch 1, did change afterwards: the copy above had to survive that
    first, last = taken[0][1], taken[-1][1]
    assert any(not torch.equal(first[k], last[k]) for k in first if k.startswith("body.0."))
