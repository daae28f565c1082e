"""Workspaces: local sees all, shared keeps browsers apart, expiry deletes only what it should."""

from __future__ import annotations

import threading

import pytest

from tl_studio.plan import Plan
from tl_studio.surgery import body_layer_names
from tl_studio.train import REGISTRY, STOPPED, Job, TrainConfig, start_job
from tl_studio.workspace import LOCAL_ID, WorkspaceLimit, WorkspaceManager

from .trainkit import demo_data


def test_local_mode_is_one_workspace(tmp_path):
    m = WorkspaceManager(tmp_path, shared=False)
    a, b = m.attach(None), m.attach("anything")
    assert a is b and a.id == LOCAL_ID
    assert a.runs_dir == tmp_path.resolve()


def test_shared_mode_ids_are_private_and_unguessable(tmp_path):
    m = WorkspaceManager(tmp_path, shared=True)
    a = m.attach(None)
    assert len(a.id) >= 30 and a.root.parent == tmp_path.resolve() / "workspaces"
    assert m.attach(a.id) is a  # a reload re-attaches
    other = m.attach("x" * 32)  # an id this server never issued: a new, empty workspace
    assert other is not a and other.id != "x" * 32
    with pytest.raises(KeyError, match="expired or does not exist"):
        m.get("y" * 32)


def test_run_names_never_escape_the_workspace(tmp_path):
    ws = WorkspaceManager(tmp_path, shared=True).attach(None)
    run = ws.new_run_path("resnet18")
    (run / "config.json").write_text("{}")
    assert ws.run_path(run.name) == run
    for bad in ("../x", "/etc", "..", "a/b", ""):
        with pytest.raises(ValueError):
            ws.run_path(bad)


def test_expiry_deletes_unseen_workspaces_and_stops_their_jobs(tmp_path):
    m = WorkspaceManager(tmp_path, shared=True, grace_seconds=60)
    old, fresh = m.attach(None), m.attach(None)
    (old.data_dir / "upload.jpg").write_bytes(b"x")
    running = threading.Event()

    def signal(trainer, event, info):
        if event == "batch":
            running.set()

    names = body_layer_names("mobilenet_v3_small")
    job = start_job(
        Plan.freeze_upto("mobilenet_v3_small", 4, names, names[3]),
        TrainConfig(epochs=100, batch_size=4, cache="off", device="cpu"),
        demo_data(4, 2),
        run_dir=old.new_run_path("mobilenet_v3_small"),
        pretrained=False,
        callbacks=[signal],
    )
    old.job_ids.append(job.id)
    assert running.wait(120)
    # A page reload touches the workspace: nothing happens within the grace period.
    now = old.last_seen + 30
    assert m.reap(now) == []
    old.last_seen -= 120  # no tab has re-attached for two minutes
    m.touch(fresh.id)
    gone = m.reap()
    assert gone == [old.id]
    assert job.status == STOPPED
    assert not old.root.exists()
    assert fresh.root.exists()
    assert len(m) == 1
    with pytest.raises(Exception):
        REGISTRY.get(job.id)


def test_creation_is_limited_and_idle_workspaces_make_room_first(tmp_path):
    m = WorkspaceManager(tmp_path, shared=True, max_per_client=2, max_total=3, idle_seconds=60)
    a, b = m.attach(None, client="10.0.0.1"), m.attach(None, client="10.0.0.1")
    with pytest.raises(WorkspaceLimit, match="this client already has 2 workspaces"):
        m.attach(None, client="10.0.0.1")
    assert m.attach(a.id, client="10.0.0.1") is a  # re-attaching is never limited
    a.last_seen -= 120  # no tab has touched it for two minutes: idle
    c = m.attach(None, client="10.0.0.1")
    assert not a.root.exists() and b.root.exists() and c.root.exists()
    d = m.attach(None, client="10.0.0.2")
    with pytest.raises(WorkspaceLimit, match="the server has 3 workspaces"):
        m.attach(None, client="10.0.0.3")
    assert len(m) == 3 and len(list((tmp_path / "workspaces").iterdir())) == 3
    b.last_seen -= 120
    e = m.attach(None, client="10.0.0.3")  # the oldest idle one, whoever's, makes room
    assert {w.id for w in (c, d, e)} == {w.id for w in m._spaces.values()} and not b.root.exists()


def test_a_workspace_with_a_running_job_is_never_idle(tmp_path):
    m = WorkspaceManager(tmp_path, shared=True, max_per_client=1, idle_seconds=60)
    busy = m.attach(None, client="10.0.0.1")
    release = threading.Event()
    job = Job(lambda j: release.wait(60), device_key="test-workspace-limit")
    REGISTRY.submit(job)
    busy.job_ids.append(job.id)
    busy.last_seen -= 120
    try:
        with pytest.raises(WorkspaceLimit):
            m.attach(None, client="10.0.0.1")
        assert busy.root.exists()
    finally:
        release.set()
        job.wait(60)
    assert m.attach(None, client="10.0.0.1") is not busy  # done, it is idle now
