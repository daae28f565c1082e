"""The training loop on real data: learning, the feature cache, taps, resume."""

from __future__ import annotations

import json

import pytest
import torch

from tl_studio.plan import HeadSpec, Plan
from tl_studio.progress import Progress
from tl_studio.surgery import body_layer_names
from tl_studio.train import JobRegistry, Trainer, TrainConfig, start_job
from tl_studio.train.cache import DTYPE_TOLERANCE
from tl_studio.train.schedule import lr_factor
from tl_studio.runs import CONFIG, LAST, METRICS, STEPS, SUMMARY, WEIGHTS, load_weights, plan_sha256

from .trainkit import demo_data, demo_dataset

FAST = "mobilenet_v3_small"


def test_real_training_learns_the_demo_dataset(lite0_run):
    run, job = lite0_run
    r = job.result
    chance = 1 / len(demo_dataset().classes)
    assert r.best_val_accuracy >= max(0.8, 3 * chance)
    assert r.cached  # backbone frozen, no augmentation: the feature cache applied
    epochs = job.metrics.snapshot()["epochs"]
    assert list(epochs["epoch"]) == [1, 2, 3, 4]
    assert epochs["train_loss"].iloc[-1] < epochs["train_loss"].iloc[0]
    steps = job.metrics.snapshot()["steps"]
    assert len(steps) == 4 * 5  # 160 training images / batch 32, every step logged
    assert steps["loss"].notna().all()
    for name in (CONFIG, METRICS, STEPS, SUMMARY, WEIGHTS, LAST):
        assert (run / name).exists(), name


def test_run_directory_contents(lite0_run):
    run, _ = lite0_run
    summary = json.loads((run / SUMMARY).read_text())
    for key in ("best_val_accuracy", "best_epoch", "epochs_run", "train_seconds", "images_per_second", "device"):
        assert key in summary
    config = json.loads((run / CONFIG).read_text())
    assert Plan.from_dict(config["plan"]).model == "efficientnet_lite0"
    ds = demo_dataset()
    assert config["dataset"]["fingerprint"] == ds.fingerprint
    assert len(config["dataset"]["train_rels"]) == len(ds.train_idx)
    assert len(config["dataset"]["val_rels"]) == len(ds.val_idx)
    assert "torch" in config["versions"] and config["seed"] == 0
    state, meta = load_weights(run / WEIGHTS)
    assert json.loads(meta["classes"]) == ds.classes
    assert meta["validated"] == "true"
    # the plan is stored once, in config.json; the weights carry its hash
    assert "plan" not in meta and meta["plan_sha256"] == plan_sha256(config["plan"])
    assert Plan.from_dict(config["plan"]).head.num_classes == len(ds.classes)


def _fit(plan, **cfg):
    data = demo_data(6, 3)
    trainer = Trainer(plan, TrainConfig(device="cpu", **cfg), data, pretrained=False)
    result = trainer.fit()
    return trainer, result


def test_cache_matches_no_cache_in_fp32():
    """Same seed, fp32 storage: training on cached activations equals training live."""
    names = body_layer_names(FAST)
    plan = Plan.freeze_upto(FAST, 4, names, names[6])  # the suffix still has conv blocks
    common = dict(epochs=2, batch_size=8, lr=1e-3, seed=3)
    t_live, live = _fit(plan, cache="off", **common)
    t_cached, cached = _fit(plan, cache="auto", cache_dtype="float32", **common)
    assert cached.cached and not live.cached
    a = t_live.metrics.snapshot()
    b = t_cached.metrics.snapshot()
    torch.testing.assert_close(
        torch.tensor(a["steps"]["loss"].values), torch.tensor(b["steps"]["loss"].values), rtol=1e-4, atol=1e-5
    )
    torch.testing.assert_close(
        torch.tensor(a["epochs"]["val_loss"].values), torch.tensor(b["epochs"]["val_loss"].values), rtol=1e-4, atol=1e-5
    )
    for k, v in live.state.items():
        if v.is_floating_point():
            torch.testing.assert_close(cached.state[k], v, rtol=1e-3, atol=DTYPE_TOLERANCE["float32"] * 10)


def test_fp16_cache_stays_close():
    names = body_layer_names(FAST)
    plan = Plan.freeze_upto(FAST, 4, names, names[6])
    common = dict(epochs=1, batch_size=8, lr=1e-3, seed=3)
    t32, _ = _fit(plan, cache="auto", cache_dtype="float32", **common)
    t16, r16 = _fit(plan, cache="auto", cache_dtype="float16", **common)
    assert r16.cached
    l32 = torch.tensor(t32.metrics.snapshot()["steps"]["loss"].values)
    l16 = torch.tensor(t16.metrics.snapshot()["steps"]["loss"].values)
    assert (l32 - l16).abs().max() <= DTYPE_TOLERANCE["float16"] * l32.abs().max()


def test_tapped_multi_layer_head_trains_on_the_cache():
    """The source text's second approach: a head fed by features from several layers."""
    taps = ["blocks.2", "blocks.7", "conv_head"]
    plan = Plan(model="efficientnet_lite0", head=HeadSpec(4, hidden=32), taps=taps, default="frozen")
    data = demo_data(6, 3)
    trainer = Trainer(plan, TrainConfig(device="cpu", epochs=4, batch_size=8, lr=3e-3, head_solver="sgd"), data)
    result = trainer.fit()
    assert result.cached
    names = body_layer_names("efficientnet_lite0")
    assert trainer.model.layer_names == names[: names.index("conv_head") + 1]
    assert trainer.inputs.cache.k == len(trainer.model.layer_names)
    assert trainer.model.feature_dim == 24 + 80 + 1280
    assert trainer.inputs.cache.h.shape[1] == trainer.model.feature_dim  # pooled taps, concatenated
    epochs = trainer.metrics.snapshot()["epochs"]
    assert epochs["train_loss"].iloc[-1] < epochs["train_loss"].iloc[0]
    assert result.best_val_accuracy > 0.5  # chance is 0.25


def test_a_cache_over_the_budget_is_memory_mapped_and_trains_the_same(caplog, tmp_path):
    """Beyond what the budget leaves it the feature cache is a mapped file: same weights, same metrics."""
    import dataclasses

    names = body_layer_names(FAST)
    plan = Plan.freeze_upto(FAST, 4, names, names[2])
    _, in_memory = _fit(plan, epochs=2, batch_size=8, memory_budget_mb=4096)
    data = dataclasses.replace(demo_data(6, 3), spill_dir=tmp_path)
    trainer = Trainer(plan, TrainConfig(device="cpu", epochs=2, batch_size=8, memory_budget_mb=0), data,
                      pretrained=False)
    with caplog.at_level("INFO", logger="tl_studio.train.cache"):
        spilled = trainer.fit()
    assert spilled.cached and trainer.inputs.cache.mapped and trainer.inputs.cache.h.device.type == "cpu"
    assert f"> budget 0 B: memory-mapped in {tmp_path}" in caplog.text
    assert list(tmp_path.iterdir()) == []  # unlinked once mapped
    for k, v in in_memory.state.items():
        if v.is_floating_point():
            torch.testing.assert_close(spilled.state[k], v)
    assert spilled.best_val_accuracy == in_memory.best_val_accuracy


def test_two_stage_recipe_unfreezes_into_new_param_groups():
    names = body_layer_names(FAST)
    plan = Plan.freeze_upto(FAST, 4, names, names[5], head_warmup_epochs=1, body_lr_ratio=0.1)
    trainer, result = _fit(plan, epochs=2, batch_size=8, lr=1e-3)
    phases = list(trainer.metrics.snapshot()["epochs"]["phase"])
    assert phases == ["head", "plan"]
    groups = trainer.optimizer.param_groups
    assert "head" in groups[0]["layers"]
    body_lrs = [g["initial_lr"] for g in groups if "head" not in g["layers"]]
    assert body_lrs and max(body_lrs) < 1e-3 and min(body_lrs) == pytest.approx(1e-4)
    in_opt = {id(p) for g in groups for p in g["params"]}
    assert all(id(p) in in_opt for p in trainer.model.parameters() if p.requires_grad)


def test_resume_continues_exactly(tmp_path):
    names = body_layer_names(FAST)
    plan = Plan.freeze_upto(FAST, 4, names, names[6])
    data = demo_data(6, 3)
    cfg = TrainConfig(epochs=3, batch_size=8, lr=1e-3, device="cpu", cache="off")
    straight = Trainer(plan, cfg, data, pretrained=False).fit()

    registry = JobRegistry()

    def stop_after_first_epoch(trainer, event, info):
        if event == "epoch" and info["epoch"] == 0:
            job.stop()

    job = start_job(plan, cfg, data, run_dir=tmp_path, pretrained=False, callbacks=[stop_after_first_epoch], registry=registry)
    assert job.wait(300) and job.result.epochs_run == 1
    resumed = Trainer(plan, cfg, data, run_dir=tmp_path, pretrained=False, resume=True)
    result = resumed.fit()
    assert result.epochs_run == 3
    assert list(resumed.metrics.snapshot()["epochs"]["epoch"]) == [1, 2, 3]
    for k, v in straight.state.items():
        if v.is_floating_point():
            torch.testing.assert_close(result.state[k], v, rtol=1e-4, atol=1e-5)


def test_a_mapped_store_trains_like_the_in_memory_one(tmp_path):
    """Beyond the memory budget images come from a mapped file, each decoded once in all: same result."""
    from tl_studio.data import ImageStore
    from tl_studio.registry import get_spec
    from tl_studio.train import TrainData

    mem = demo_data(3, 2)
    ds = demo_dataset()
    mapped = ImageStore(ds.paths, get_spec(FAST).preprocess, memory_budget_bytes=0, workers=2, spill_dir=tmp_path)
    assert not mapped.in_memory and mapped.mapped
    data = TrainData(mapped, mem.labels, mem.train_idx, mem.val_idx, mem.classes)
    names = body_layer_names(FAST)
    plan = Plan.freeze_upto(FAST, 4, names, names[4])
    cfg = TrainConfig(device="cpu", epochs=3, batch_size=4, cache="off")
    a = Trainer(plan, cfg, mem, pretrained=False).fit()
    b = Trainer(plan, cfg, data, pretrained=False).fit()
    # The fitted starting head's pass reads every image of the dataset, then 3 epochs of training and
    # validation read them again: each image decoded once in all.
    assert mapped.decodes == len(ds.paths) and len(mapped.errors) == 0
    for k, v in a.state.items():
        if v.is_floating_point():
            torch.testing.assert_close(b.state[k], v)


def test_the_logged_learning_rate_is_the_heads_at_every_step_and_after_unfreezing():
    """After a phase change the newest optimizer group is a body layer's: the log still shows the head's."""
    names = body_layer_names(FAST)
    plan = Plan.freeze_upto(FAST, 4, names, names[5], head_warmup_epochs=1, body_lr_ratio=0.1)
    cfg = dict(epochs=2, batch_size=8, lr=1e-3, schedule="cosine", warmup_epochs=0.5, sync_every=10)
    trainer, _ = _fit(plan, **cfg)
    snap = trainer.metrics.snapshot()
    steps, epochs = snap["steps"], snap["epochs"]
    n_steps = len(steps) // 2  # 24 training images: 3 steps per epoch, one window each
    total, warmup = 2 * n_steps, int(0.5 * n_steps)
    expected = [1e-3 * lr_factor(s, total, warmup, "cosine") for s in range(total)]
    assert steps["lr"].tolist() == pytest.approx(expected)
    assert len(set(expected)) == total  # the rate moves every step, so each row must carry its own
    assert list(epochs["phase"]) == ["head", "plan"]
    assert epochs["lr"].tolist() == pytest.approx([expected[n_steps - 1], expected[-1]])
    body = [g["lr"] for g in trainer.optimizer.param_groups if "head" not in g["layers"]]
    assert body and max(body) < epochs["lr"].iloc[-1]


def test_progress_events_follow_decoding_extraction_epochs_and_steps():
    from tl_studio.train import data_from_dataset

    seen: list[Progress] = []
    ds = demo_dataset()
    data_from_dataset(ds, FAST, publish=seen.append)
    decoding = [e for e in seen if e.phase == "decoding"]
    assert decoding and decoding[-1].done == decoding[-1].total == len(ds.paths)
    assert decoding[-1].unit == "images" and decoding[-1].rate > 0 and decoding[-1].eta == 0

    names = body_layer_names(FAST)
    plan = Plan.freeze_upto(FAST, 4, names, names[6])
    trainer, _ = _fit(plan, epochs=2, batch_size=8, cache="auto")
    log = trainer.metrics
    extracting = log.progress_event("extracting")
    assert extracting.done == extracting.total == 24 + 12  # train and validation images, once
    epoch = log.progress_event("epoch")
    assert (epoch.done, epoch.total, epoch.unit) == (1, 2, "epochs") and epoch.eta > 0  # at the last epoch's start
    step = log.progress_event("step")
    assert (step.done, step.total, step.unit) == (3, 3, "steps") and step.eta == 0
    assert log.progress_event() == step  # the latest of all
    assert log.progress()["epoch"] == 2  # the live position the UI and CLI read today


def test_a_stop_while_the_head_is_fitted_ends_the_run_stopped(tmp_path):
    """The head's cross-validation publishes its folds and stops between them: a stop asked for while
    it runs ends the job "stopped" with no head fitted, not after minutes of folds."""
    import threading

    from tl_studio.progress import FITTING
    from tl_studio.runs import STOPPED

    plan = Plan.head_only(FAST, 4)  # nothing in the body trains: the head is fitted, no epochs
    cfg = TrainConfig(device="cpu", epochs=2, batch_size=8)
    stop, seen = threading.Event(), []
    trainer = Trainer(plan, cfg, demo_data(6, 3), run_dir=tmp_path / "run", pretrained=False, stop_event=stop)
    publish = trainer.metrics.publish

    def watch(event):  # the test stands where the UI's Stop button does: it acts on what the job publishes
        publish(event)
        seen.append((event.phase, event.done))
        if event.phase == FITTING and event.done == 2:
            stop.set()

    trainer.metrics.publish = watch
    result = trainer.fit()
    assert result.status == STOPPED
    fitting = [done for phase, done in seen if phase == FITTING]
    assert fitting == [0, 1, 2]  # published from the first fold on; nothing after the stop
    assert json.loads((tmp_path / "run" / SUMMARY).read_text())["status"] == STOPPED
