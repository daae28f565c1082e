"""Export parity: each format's outputs match the in-app model's."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from tl_studio.export import ExportError, export_run
from tl_studio.plan import Plan
from tl_studio.predict import Normalized, Predictor, load_model
from tl_studio.registry import get_spec
from tl_studio.runs import WEIGHTS, load_weights, save_weights
from tl_studio.surgery import build_model

from .conftest import DATA


@pytest.fixture(scope="module")
def reference(lite0_run):
    run, _ = lite0_run
    model, info = load_model(run)
    net = Normalized(model, get_spec("efficientnet_lite0").preprocess).eval()
    x = torch.rand(3, 3, 224, 224)
    with torch.no_grad():
        return run, info, x, net(x)


def test_safetensors_export(reference):
    run, info, x, ref = reference
    path = export_run(run, "safetensors")
    with safe_open(str(path), "pt") as fh:
        meta = fh.metadata()
        state = {k: fh.get_tensor(k) for k in fh.keys()}
    assert json.loads(meta["classes"]) == info.classes
    model = build_model(Plan.from_json(meta["plan"]), pretrained=False, class_names=info.classes)
    model.load_state_dict(state)
    pre = json.loads(meta["preprocess"])
    net = Normalized(model.eval(), get_spec("efficientnet_lite0").preprocess)
    assert pre["mean"] == [0.5, 0.5, 0.5]
    with torch.no_grad():
        torch.testing.assert_close(net(x), ref)


def test_onnx_export_matches_in_onnxruntime(reference):
    import onnx
    import onnxruntime as ort

    run, info, x, ref = reference
    path = export_run(run, "onnx")
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(props["classes"]) == info.classes
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(out, ref.numpy(), rtol=1e-4, atol=1e-4)
    one = session.run(None, {"x": x[:1].numpy()})[0]  # the batch dimension is dynamic
    np.testing.assert_allclose(one, ref[:1].numpy(), rtol=1e-4, atol=1e-4)


def test_pt2_export_matches(reference):
    run, info, x, ref = reference
    path = export_run(run, "pt2")
    program = torch.export.load(str(path))
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), ref, rtol=1e-5, atol=1e-5)
    assert json.loads(path.with_suffix(".pt2.json").read_text())["classes"] == info.classes


def test_predictor_uses_the_trained_head(lite0_run):
    run, _ = lite0_run
    pred = Predictor.from_run(run)
    out = pred.predict([DATA / "coffee.jpg"], top_k=2)
    assert len(out) == 1 and len(out[0]) == 2
    assert {p["label"] for p in out[0]} <= set(pred.classes)
    assert sum(p["probability"] for p in out[0]) <= 1.0 + 1e-6


def test_unknown_format_is_refused(lite0_run):
    with pytest.raises(ExportError, match="format: must be one of"):
        export_run(lite0_run[0], "tflite")


def test_runs_made_before_the_plan_hash_still_load(lite0_run, tmp_path, caplog):
    """Older runs kept the plan in the weights' metadata; a mismatched hash is reported, not fatal."""
    from .test_evaluate_run import copy_run

    run, _ = lite0_run
    state, meta = load_weights(run / WEIGHTS)
    config = json.loads((run / "config.json").read_text())
    old = copy_run(run, tmp_path / "old")
    old_meta = {k: v for k, v in meta.items() if k != "plan_sha256"}
    save_weights(old / WEIGHTS, state, {**old_meta, "plan": json.dumps(config["plan"])})
    assert Predictor.from_run(old).predict([DATA / "coffee.jpg"])[0][0]["label"] == \
        Predictor.from_run(run).predict([DATA / "coffee.jpg"])[0][0]["label"]
    edited = copy_run(run, tmp_path / "edited")
    cfg = {**config, "plan": {**config["plan"], "head_warmup_epochs": 3}}
    (edited / "config.json").write_text(json.dumps(cfg))
    load_model(edited)
    assert "another plan than the one in config.json" in caplog.text
