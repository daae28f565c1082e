"""timm backbones by Hugging Face Hub id: layers, plans, training, weights and the way back to the Hub.

Fully offline: the test builds one CNN (resnet18) and one ViT (vit_tiny) with
random weights, places them in a Hugging Face cache layout in a temporary
folder, and points HF_HUB_CACHE at it with HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

from tl_studio.layers import layer_table
from tl_studio.layout import layout
from tl_studio.plan import Plan, PlanError
from tl_studio.registry import get_spec
from tl_studio.states import layer_states
from tl_studio.surgery import build_model
from tl_studio.features.fold import FrozenPrefix
from tl_studio.weights import WeightsUnavailable

from .hubkit import CNN, REVISION, VIT, demo_subset, place
from .trainkit import DEMO

ROOT = Path(__file__).resolve().parents[1]
TOL = dict(atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    cache = tmp_path_factory.mktemp("hf") / "hub"
    before = os.environ.get("HF_HUB_CACHE")
    os.environ["HF_HUB_CACHE"] = str(cache)
    refs = {CNN: place(cache, CNN, "resnet18.a1_in1k"), VIT: place(cache, VIT, "vit_tiny_patch16_224.augreg_in21k")}
    yield SimpleNamespace(cache=cache, refs=refs)
    if before is None:
        os.environ.pop("HF_HUB_CACHE", None)
    else:
        os.environ["HF_HUB_CACHE"] = before


def tl(*args, cache, check=True):
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "TL_STUDIO_OFFLINE": "1",
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "tl_studio", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def run_stages(spec, model, x):
    for st in spec.stages(model):
        x = st.module(x)
    return x


# ---- the layer table ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", [CNN, VIT])
def test_the_layer_table_comes_from_timm(hub, name):
    spec = get_spec(name)
    ref = hub.refs[name]
    coarse, fine = layer_table(name), layer_table(name, "fine")
    assert spec.family == "timm" and spec.revision == REVISION and spec.hub.licence == "apache-2.0"
    # Every parameter sits in exactly one row, so "freeze all" freezes all.
    total = sum(p.numel() for p in ref.parameters())
    assert coarse["params"].sum() == total and fine["params"].sum() == total
    assert coarse["name"].is_unique and fine["name"].is_unique
    assert list(coarse["name"][-2:]) == ["pool", ref.pretrained_cfg["classifier"]]
    assert coarse.iloc[-1]["role"] == "classifier" and coarse.iloc[-1]["output_shape"] == str(ref.num_classes)
    names = list(coarse["name"])
    # The last layer of each of timm's feature_info stages outputs its channel count
    # (a feature point inside the stem, resnet's act1, is no layer boundary).
    lay = layout(name)
    checked = 0
    for f in ref.feature_info:
        inside = [n for n in lay.names if n == f["module"] or n.startswith(f["module"] + ".")]
        if inside:
            assert lay.layer(inside[-1]).pooled_width == f["num_chs"], (f, inside)
            checked += 1
    assert checked >= 4
    if name == CNN:
        assert names[:3] == ["stem", "layer1.0", "layer1.1"] and lay.has_batchnorm
        assert lay.layer("layer4.1").output_shape == (512, 7, 7)
    else:
        assert names[:2] == ["stem", "blocks.0"] and names[-4:] == ["blocks.11", "norm", "pool", "head"]
        assert not lay.has_batchnorm
        assert lay.layer("blocks.3").output_shape == (197, 192)
        # The class token and the position embedding belong to the stem: "freeze all" freezes them.
        assert {"stem.cls_token", "stem.pos_embed"} <= set(fine["name"])
    assert spec.preprocess.interpolation == ref.pretrained_cfg["interpolation"] == "bicubic"
    assert spec.preprocess.crop_pct == ref.pretrained_cfg["crop_pct"]


@pytest.mark.parametrize("name", [CNN, VIT])
def test_base_logits_match_timm_create_model(hub, name):
    """Our base model (its stages in order, and the BatchNorm-folded frozen copy) computes timm's logits."""
    spec = get_spec(name)
    ours = spec.build(pretrained=True).eval()
    theirs = timm.create_model(f"hf-hub:{name}", pretrained=True, cache_dir=hub.cache).eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = theirs(x)
        torch.testing.assert_close(run_stages(spec, ours, x), want, **TOL)
        # The whole body frozen, folded and channels_last, then the base model's own classifier.
        model = build_model(Plan.head_only(name, 2), pretrained=True)
        folded = FrozenPrefix(model, len(model.body), torch.device("cpu"), bf16=False)
        features, _ = folded(x)
        classifier = spec.stages(ours)[-1].module
        torch.testing.assert_close(classifier(features), want, **TOL)
    if name == CNN:
        assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.stages.modules()), "BatchNorm left unfolded"


# ---- plans -------------------------------------------------------------------------------------
def test_plans_freeze_cut_and_tap_a_cnn(hub):
    names = list(layout(CNN).names)
    plan = Plan(model=CNN, head=Plan.head_only(CNN, 4).head, default="frozen",
                layers={"layer3.1": "train"}, taps=["layer2.1", "layer3.1"])
    st = layer_states(plan)
    assert st.cut == names.index("layer3.1")  # layers after the last tap are removed
    assert [s.name for s in st.layers if s.state == "trains"] == ["layer3.1"]
    model = build_model(plan, pretrained=False).train()
    assert model.feature_dim == 128 + 256
    trains = {n for n, p, _ in model.named_body_parameters() if p.requires_grad}
    assert trains == set(st.trainable_names) and all(n.startswith("layer3.1.") for n in trains)
    model(torch.randn(2, 3, 224, 224)).sum().backward()
    assert model.body[names.index("layer3.1")].conv1.weight.grad is not None
    with pytest.raises(PlanError, match="unknown layer 'layer9.0'"):
        layer_states(Plan(model=CNN, head=plan.head, cut_after="layer9.0"))


def test_plans_freeze_cut_and_tap_a_vit(hub):
    """A ViT's blocks are its layers; a tapped block's tokens are pooled as timm pools them (class token)."""
    plan = Plan(model=VIT, head=Plan.head_only(VIT, 3).head, default="frozen", layers={"blocks.5": "train"},
                cut_after="blocks.5", taps=["blocks.2", "blocks.5"], bn="train")
    st = layer_states(plan)
    assert not any(s.bn_trains for s in st.layers)  # LayerNorm: the BatchNorm policy touches nothing
    assert st.removed == sum(layout(VIT).layer(n).n_params for n in ["blocks.6", "blocks.7", "blocks.8", "blocks.9",
                                                                      "blocks.10", "blocks.11", "norm", "pool"])
    model = build_model(plan, pretrained=True).eval()
    x = torch.randn(2, 3, 224, 224)
    spec, base = get_spec(VIT), get_spec(VIT).build(pretrained=True).eval()
    stages = spec.stages(base)
    with torch.no_grad():
        h, expect = x, []
        for st_ in stages[:7]:  # stem, blocks.0 .. blocks.5
            h = st_.module(h)
            if st_.name in ("blocks.2", "blocks.5"):
                expect.append(h[:, 0])
        torch.testing.assert_close(model.features(x), torch.cat(expect, dim=1))
    # The pool layer is timm's own forward_head: token pooling and fc_norm.
    assert base.global_pool == "token"


# ---- training, export, reloading ----------------------------------------------------------------
@pytest.fixture(scope="module")
def cnn_run(hub, tmp_path_factory):
    """tl-studio train assets/demo --model timm/resnet18.a1_in1k --plan head --epochs 1, network off."""
    run = tmp_path_factory.mktemp("runs") / "resnet18"
    proc = tl("train", DEMO, "--model", CNN, "--plan", "head", "--epochs", "1", "--out", run, "--json", cache=hub.cache)
    assert json.loads(proc.stdout)["epochs_run"] == 1
    return run


@pytest.fixture(scope="module")
def vit_run(hub, tmp_path_factory):
    """The ViT with its last block and norm training on a few demo images (the frozen prefix cached)."""
    from tl_studio.train import FINISHED, JobRegistry, TrainConfig, start_job

    run = tmp_path_factory.mktemp("runs") / "vit"
    data = demo_subset(VIT, 4, 2)
    plan = Plan(model=VIT, head=Plan.head_only(VIT, 4).head, default="frozen",
                layers={"blocks.11": "train", "norm": "train"})
    job = start_job(plan, TrainConfig(epochs=2, batch_size=8, lr=1e-3, device="cpu"), data, run_dir=run,
                    registry=JobRegistry())
    assert job.wait(600) and job.status == FINISHED, job.error
    return run


def test_training_records_revision_and_licence(cnn_run, vit_run):
    from tl_studio.evaluate import evaluate_run
    from tl_studio.evaluate.report import model_card

    for run, name in ((cnn_run, CNN), (vit_run, VIT)):
        config = json.loads((run / "config.json").read_text())
        base = config["base_weights"]
        assert base["id"] == name and base["revision"] == REVISION and base["licence"] == "apache-2.0"
        assert base["source"] == "hf-hub" and base["pretrained"] is True
    summary = json.loads((vit_run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["feature_cache"] is True
    card = model_card(evaluate_run(cnn_run))
    assert REVISION in card and "apache-2.0" in card


@pytest.mark.parametrize("which", ["cnn", "vit"])
def test_hub_export_reloads_in_timm(which, cnn_run, vit_run, hub, tmp_path):
    from tl_studio.export import export_run
    from tl_studio.predict import load_model

    run = cnn_run if which == "cnn" else vit_run
    dest = export_run(run, "hub", tmp_path / "hub")
    config = json.loads((dest / "config.json").read_text())
    assert {"architecture", "num_classes", "label_names", "pretrained_cfg"} <= set(config)
    assert config["label_names"] == ["brick", "deep_field", "grass", "gravel"] and config["num_classes"] == 4
    card = (dest / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: timm" in card and "license: apache-2.0" in card
    assert {p.name for p in dest.iterdir()} == {"config.json", "model.safetensors", "README.md"}
    reloaded = timm.create_model(f"local-dir:{dest}", pretrained=True).eval()
    model, _ = load_model(run)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), model(x), **TOL)


def test_hub_export_refuses_other_plans_with_one_line(hub, tmp_path, capsys):
    from tl_studio.train import FINISHED, JobRegistry, TrainConfig, start_job

    run = tmp_path / "taps"
    plan = Plan(model=CNN, head=Plan.head_only(CNN, 4).head, default="frozen", taps=["layer3.1", "layer4.1"])
    job = start_job(plan, TrainConfig(epochs=1, batch_size=8, device="cpu"), demo_subset(CNN, 2, 1), run_dir=run,
                    registry=JobRegistry())
    assert job.wait(600) and job.status == FINISHED, job.error
    from tl_studio.cli.main import main

    assert main(["export", str(run), "--format", "hub"]) == 2
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and "hub export needs" in line and "taps" in line and "--format safetensors" in line
    assert main(["export", str(run), "--format", "safetensors"]) == 0


# ---- weights -------------------------------------------------------------------------------------
def test_weights_file_and_never_unpickling(hub, tmp_path):
    from tl_studio.predict import Predictor

    ref = hub.refs[CNN]
    file = tmp_path / "mine.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, file)
    pred = Predictor.from_pretrained(CNN, pretrained=file)
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(pred.net.model(pred.net.normalize(x)), ref(pred.net.normalize(x)), **TOL)
    pickled = tmp_path / "weights.pth"
    torch.save(ref.state_dict(), pickled)
    with pytest.raises(WeightsUnavailable, match="must be a .safetensors file"):
        get_spec(CNN).build(pretrained=pickled)
    wrong = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in hub.refs[VIT].state_dict().items()}, wrong)
    with pytest.raises(WeightsUnavailable, match="does not fit resnet18"):
        get_spec(CNN).build(pretrained=wrong)


def test_uncached_models_fail_fast_and_clearly(hub, tmp_path, capsys):
    from tl_studio.cli.main import main

    with pytest.raises(KeyError, match="HF_HUB_OFFLINE"):
        get_spec("someone/not-in-the-cache")
    with pytest.raises(KeyError, match="not a Hub id"):
        get_spec("hf_hub:nope@")
    # A timm/ id the cache lacks still lists its layers (timm's own config) but has no weights.
    spec = get_spec("timm/resnet34.a1_in1k")
    assert spec.weights_status() == "download" and len(layer_table("timm/resnet34.a1_in1k")) > 10
    with pytest.raises(WeightsUnavailable, match="hf download timm/resnet34.a1_in1k model.safetensors"):
        spec.build(pretrained=True)
    assert main(["train", str(DEMO), "--model", "timm/resnet34.a1_in1k", "--out", str(tmp_path / "r"),
                 "--plan", "head"]) == 2
    err = capsys.readouterr().err
    assert "its weights are not cached" in err and "timm/resnet34.a1_in1k" in err and err.count("\n") == 1


def test_cli_models_and_layers_offline(hub, tmp_path, capsys):
    from tl_studio.cli.main import main

    assert main(["models", "--json"]) == 0
    listed = {r["model"]: r for r in json.loads(capsys.readouterr().out)}
    assert listed[CNN]["weights"] == "cached" and listed[VIT]["family"] == "timm"
    # No cache at all and the network off (a fresh process): the layers still list, with timm's preprocessing.
    empty = tmp_path / "empty"
    for name, crop_pct in (("timm/convnext_atto.d2_in1k", 0.875), (VIT, 0.9)):
        out = json.loads(tl("layers", name, "--json", cache=empty).stdout)
        pre = out["preprocessing"]
        assert pre == {"input_size": [3, 224, 224], "interpolation": "bicubic", "crop_pct": crop_pct,
                       "crop_mode": "center", "mean": pre["mean"], "std": pre["std"]}
        assert out["layers"][0]["name"] == "stem" and all("output_shape" in r for r in out["layers"])
    # A model whose forward is no chain of layers (EVA passes rotary embeddings along) says so in one line.
    os.environ["HF_HUB_CACHE"] = str(empty)
    try:
        assert main(["layers", "timm/eva02_tiny_patch14_224.mim_in22k"]) == 2
    finally:
        os.environ["HF_HUB_CACHE"] = str(hub.cache)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "do not compute the model's output" in err


# ---- strategy -----------------------------------------------------------------------------------
def _images(name, per_class):
    data = demo_subset(name, per_class, 1)
    return (data.images.get(data.train_idx), data.labels[data.train_idx],
            data.images.get(data.val_idx), data.labels[data.val_idx])


def test_similarity_says_which_signals_apply(hub):
    """BatchNorm statistics where the model has them, its ImageNet head where it has one, else neutral."""
    from tl_studio.strategy import measure_similarity
    from tl_studio.strategy.similarity import HEAD, STATISTICS

    place(hub.cache, "someone/vit-backbone", "vit_tiny_patch16_224", num_classes=0)
    for name, used in ((CNN, (HEAD, STATISTICS)), (VIT, (HEAD,)), ("someone/vit-backbone", ())):
        images, labels, _, _ = _images(name, 2)
        report = measure_similarity(name, images, labels)
        assert report.signals_used == used, name
        assert report.to_dict()["signals_used"] == list(used)
        assert 0.0 <= report.similarity <= 1.0 and report.transferability == report.transferability
        if not used:
            assert report.similarity == 0.5 and "No similarity signal applies" in report.explanation
        elif used == (HEAD,):
            assert "no BatchNorm statistics" in report.explanation
    assert get_spec("someone/vit-backbone").categories == []


def test_evidence_and_recommendation_for_a_vit(hub, tmp_path):
    """The one feature pass (every block tapped, tokens pooled as timm pools them), the probe curve and a plan."""
    from tl_studio.features import FeatureStore, features_for
    from tl_studio.strategy import freeze_depth_sweep, gather_evidence, recommend

    table = freeze_depth_sweep(VIT, *_images(VIT, 3), depths=["blocks.3", "blocks.11", "pool"])
    assert list(table["layer"]) == ["blocks.3", "blocks.11", "pool"] and (table["feature_dim"] == 192).all()
    data = demo_subset(VIT, 5, 1)
    fs = features_for(VIT, data.images, data.info["fingerprint"], store=FeatureStore(tmp_path / "cache"))
    assert all(fs.width(n) == 192 for n in fs.layers if n.startswith("blocks."))
    ev = gather_evidence(fs, data.labels, data.train_idx, 4)
    assert ev.similarity.signals_used == ("imagenet head",)  # no BatchNorm in a ViT
    rec = recommend(VIT, 5, ev.similarity.similarity, 4, evidence=ev)
    layer_states(rec.plan)  # a valid plan for the ViT's own layers
    assert rec.plan.model == VIT and rec.basis == "evidence"


# ---- the model picker --------------------------------------------------------------------------
def test_hub_ids_parse():
    from tl_studio.hub.files import HubError, looks_like_hub_id, parse

    assert parse("timm/convnext_atto.d2_in1k").repo == "timm/convnext_atto.d2_in1k"
    h = parse("hf_hub:me/my-model@v1.0")
    assert (h.repo, h.revision) == ("me/my-model", "v1.0") and parse("hf-hub:me/m").revision is None
    assert parse("local-dir:/tmp/x").local_dir == Path("/tmp/x")
    assert not looks_like_hub_id("resnet18") and looks_like_hub_id("me/m")
    for bad in ("hf_hub:", "a/b/c", "me/m@", "local-dir:"):
        with pytest.raises(HubError):
            parse(bad)


def test_the_model_picker_takes_a_hub_id(hub):
    from tl_studio.ui import model_tab, session as S
    from tl_studio.ui.context import UserError

    s = model_tab.pick_model(S.Session(), f"  {VIT} ")
    assert s.model == VIT and s.plan == Plan.head_only(VIT, 2)
    note = model_tab.model_note(VIT)
    assert REVISION[:12] in note and "apache-2.0" in note and "Hugging Face cache" in note
    assert (f"{VIT}  ·  weights cached", VIT) in model_tab.model_choices(VIT)
    with pytest.raises(UserError, match="not a Hub id"):
        model_tab.pick_model(s, "hf_hub:me/m@")
    with pytest.raises(UserError, match="distilled"):
        model_tab.pick_model(s, "timm/deit_tiny_distilled_patch16_224.fb_in1k")


@pytest.mark.browser
def test_the_model_tab_takes_a_hub_id_in_a_browser(hub, tmp_path):
    playwright_api = pytest.importorskip("playwright.sync_api")
    from .uikit import RunningApp, launch_browser

    app = RunningApp(tmp_path / "runs")
    with playwright_api.sync_playwright() as pw:
        browser = launch_browser(pw)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(app.url)
            expect = playwright_api.expect
            expect(page.locator("#tl-mode")).to_contain_text("Workspace ready", timeout=60_000)
            page.get_by_role("tab", name="2 · Model & layers").click()
            box = page.locator("#tl-hub-id textarea, #tl-hub-id input").first
            page.get_by_role("button", name=CNN).click()  # a suggestion fills the box
            expect(box).to_have_value(CNN)
            box.fill(VIT)
            page.locator("#tl-hub-use").click()
            expect(page.locator("#tl-layers")).to_contain_text("blocks.11", timeout=60_000)
            expect(page.get_by_text("apache-2.0").first).to_be_visible()
            picker = page.get_by_role("combobox", name="Pretrained model")
            expect(picker).to_have_value(re.compile(re.escape(VIT)))
        finally:
            browser.close()
            app.close()
