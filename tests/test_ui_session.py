"""The UI's moves as plain functions of a typed session: no browser, real data, a real job."""

from __future__ import annotations

import shutil

import pytest

from tl_studio.data import load_dataset
from tl_studio.plan import Plan
from tl_studio.states import layer_states
from tl_studio.train import FINISHED, REGISTRY, TrainConfig
from tl_studio.runs import load_run
from tl_studio.ui import model_tab, session as S, strategy_tab, train_tab
from tl_studio.ui.context import UserError
from tl_studio.workspace import WorkspaceManager

from .trainkit import DEMO, demo_dataset


@pytest.fixture(scope="module")
def demo_evidence():
    """The evidence pass on the demo data (one pass of the embedded model, probes on the training split)."""
    from tl_studio.strategy import recommend_for_data

    return recommend_for_data("efficientnet_lite0", demo_dataset()).evidence


@pytest.fixture(scope="module")
def three_classes(tmp_path_factory):
    """The demo dataset without one of its four classes."""
    root = tmp_path_factory.mktemp("three")
    for split in ("train", "val"):
        for cls in ("brick", "grass", "gravel"):
            shutil.copytree(DEMO / split / cls, root / split / cls)
    return load_dataset(root)


def test_new_data_sets_the_head_and_the_sliders():
    s = S.with_dataset(S.Session(), demo_dataset())
    assert s.plan.head.num_classes == 4
    assert s.strategy.images_per_class == len(demo_dataset().train_idx) / 4
    assert s.recommendation is not None and s.recommendation.num_classes == 4


def test_measure_moves_the_sliders_and_apply_applies_what_is_shown(demo_evidence):
    s = S.with_dataset(S.Session(), demo_dataset())
    s = S.with_strategy(s, 3000, 0.9, False)  # a large & similar slider setting first
    assert s.recommendation.case == "large_similar"
    measured = S.with_evidence(s, demo_evidence)
    assert measured.strategy.images_per_class == s.dataset_images_per_class
    assert measured.strategy.similarity == round(demo_evidence.similarity.similarity, 2)
    assert measured.source == S.EVIDENCE and measured.recommendation.evidence is demo_evidence
    assert measured.recommendation.case.startswith("small")  # 40 images per class, as the sliders now say
    applied = S.apply_recommendation(measured)
    assert applied.plan == measured.recommendation.plan
    assert applied.settings.epochs == measured.recommendation.epochs
    assert "From the evidence" in strategy_tab.rec_text(measured)
    # Moving a slider afterwards sets the evidence aside, and says so.
    moved = S.with_strategy(measured, 3000, 0.1, False)
    assert moved.source == S.PRIOR and moved.recommendation.case == "large_different"
    assert moved.recommendation.evidence is None
    assert "set aside" in strategy_tab.rec_text(moved)


def test_evidence_is_kept_only_for_the_data_it_was_measured_on(demo_evidence, three_classes):
    s = S.with_evidence(S.with_dataset(S.Session(), demo_dataset()), demo_evidence)
    assert s.matching_evidence is demo_evidence
    other = S.with_dataset(s, three_classes)
    assert other.matching_evidence is None and other.source == S.PRIOR
    assert S.with_evidence(other, demo_evidence) == other  # measured on other data: set aside
    back = S.with_dataset(other, demo_dataset())
    assert back.matching_evidence is demo_evidence
    assert S.with_model(back, "resnet18").matching_evidence is None


def test_checklist_moves_and_errors_leave_the_session():
    s = S.with_dataset(S.Session(), demo_dataset())
    st = layer_states(s.plan)
    edited = model_tab.edit(s, ["blocks.15"], None, [], 1, 256, 0.2, "frozen")
    assert layer_states(edited.plan).ticked == ["blocks.15"] and st.ticked == []
    with pytest.raises(UserError, match="taps"):
        model_tab.edit(s, [], "blocks.3", ["blocks.9"], 1, 256, 0.2, "frozen")
    with pytest.raises(UserError, match="Freeze up to: choose a layer"):
        model_tab.quick(s, "upto", None)
    assert model_tab.quick(edited, "head").plan == Plan.head_only("efficientnet_lite0", 4)


def test_the_job_keeps_its_plan_while_the_session_changes(tmp_path, three_classes):
    manager = WorkspaceManager(tmp_path / "runs", shared=False)
    ws = manager.attach(None)
    ws.session = S.with_dataset(S.Session(), demo_dataset())
    config = TrainConfig(epochs=3, batch_size=16, lr=3e-3, device="cpu")
    job = train_tab.start(ws, "efficientnet_lite0", config)
    plan = job.plan
    # While it runs (or waits), the person loads 3-class data and edits the checklist.
    with ws.lock:
        ws.session = S.with_dataset(ws.session, three_classes)
        ws.session = model_tab.edit(ws.session, ["blocks.14", "blocks.15"], None, [], 2, 64, 0.1, "train")
    assert ws.session.plan.head.num_classes == 3 and job.plan is plan and plan.head.num_classes == 4
    assert job.wait(600) and job.status == FINISHED, job.error
    info = load_run(job.run_dir)
    assert info.plan == plan and info.plan.head.num_classes == 4
    assert job.config == config == ws.session.settings
    REGISTRY.forget(job.id)


def test_the_onnx_button_is_off_with_a_hint_where_onnx_is_missing(tmp_path, monkeypatch):
    """The page built as it is where onnx/onnxscript are not installed (the default install has them)."""
    from tl_studio.ui import predict_tab
    from tl_studio.ui.app import build_app

    monkeypatch.setattr(predict_tab, "ONNX_OK", False)
    demo = build_app(WorkspaceManager(tmp_path / "runs", shared=False))
    props = {c["props"].get("elem_id"): c["props"] for c in demo.config["components"]}
    assert props["tl-export-onnx"]["interactive"] is False and "not installed" in props["tl-export-onnx"]["value"]
    assert "pip install onnx onnxscript" in props["tl-export-onnx-hint"]["value"]


def test_the_status_line_names_the_phase_a_job_is_in():
    """Before its first step a job shows what it is doing, as the CLI does: here, decoding images."""
    import threading
    import time

    from tl_studio.data import DatasetError
    from tl_studio.progress import DECODING, Meter
    from tl_studio.train import JobRegistry, start_job

    gate = threading.Event()

    def data(publish):
        Meter(DECODING, 10, "images", publish).update(3)
        gate.wait(30)
        raise DatasetError("the test ends here")

    job = start_job(Plan.head_only("efficientnet_lite0", 2), TrainConfig(epochs=1, device="cpu"), data,
                    registry=JobRegistry())
    try:
        deadline = time.monotonic() + 30
        while job.metrics.progress_event() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert train_tab.status_line(job).startswith("**Decoding images** · 3/10 images (30%)")
    finally:
        gate.set()
        job.wait(30)
    assert "Failed" in train_tab.status_line(job) and "the test ends here" in train_tab.status_line(job)
