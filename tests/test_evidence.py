"""The evidence pass and the heads fitted on it: training data only, one plan everywhere, a cache that misses
when it must. Real images (glyphs rendered from matplotlib's fonts), the real embedded model."""

from __future__ import annotations

import dataclasses
import json
import logging

import jsonschema
import pytest
import torch

from bench import evidence_phase, glyphs
from tl_studio.cli.main import main as cli
from tl_studio.data import ImageStore, load_dataset
from tl_studio.features import FeatureStore, evidence_rows, feature_key, features_for, sample_fingerprint
from tl_studio.features import store as store_module
from tl_studio.plan import json_schema
from tl_studio.registry import get_spec
from tl_studio.runs import load_run
from tl_studio.states import layer_states
from tl_studio.ui.session import evidence_matches
from tl_studio.strategy import gather_evidence, recommend, recommend_for_data

MODEL = "efficientnet_lite0"


@pytest.fixture(scope="module")
def glyph_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("glyphs")
    glyphs.generate(root, glyphs.Spec(chars="aekmst", train=12, val=8, size=40, seed=3))
    ds = load_dataset(root)
    images = ImageStore(ds.paths, get_spec(MODEL).preprocess)
    return root, ds, images


@pytest.fixture(scope="module")
def glyph_features(glyph_data, tmp_path_factory):
    _, ds, images = glyph_data
    return features_for(MODEL, images, ds.fingerprint, store=FeatureStore(tmp_path_factory.mktemp("fs")))


def test_permuting_the_validation_labels_leaves_every_choice(glyph_data, glyph_features):
    _, ds, _ = glyph_data
    k = len(ds.classes)
    labels = torch.tensor(ds.labels)
    shuffled = labels.clone()
    val = torch.tensor(ds.val_idx)
    shuffled[val] = labels[val][torch.randperm(len(val), generator=torch.Generator().manual_seed(1))]
    assert not torch.equal(shuffled, labels)
    a = gather_evidence(glyph_features, labels, ds.train_idx, k)
    b = gather_evidence(glyph_features, shuffled, ds.train_idx, k)
    assert dataclasses.replace(a, seconds=0.0) == dataclasses.replace(b, seconds=0.0)
    ipc = len(ds.train_idx) / k
    plan_a = recommend(MODEL, ipc, a.similarity.similarity, k, device="cpu", evidence=a).plan
    plan_b = recommend(MODEL, ipc, b.similarity.similarity, k, device="cpu", evidence=b).plan
    assert plan_a == plan_b
    # The curve is a curve: one point per candidate layer, with a standard error, and the choice within noise.
    assert len(a.curve) >= 10 and all(0 <= p.accuracy <= 1 and p.se >= 0 for p in a.curve)
    assert a.within_noise(a.cut) and a.selected_on == "train-cv"


def test_the_cache_key_misses_on_other_weights_or_other_data(glyph_data, glyph_features, tmp_path):
    _, ds, images = glyph_data
    key = feature_key(MODEL, ds.fingerprint)
    assert glyph_features.key == key
    assert feature_key(MODEL, ds.fingerprint, pretrained=False) != key
    assert feature_key(MODEL, "another-fingerprint") != key
    assert feature_key("mobilenet_v3_small", ds.fingerprint) != key
    store = FeatureStore(tmp_path / "cache")
    assert store.get(key) is None
    assert store.put(glyph_features) == store.path(key)
    store_module._memory.clear()  # from disk, not memory
    again = store.get(key)
    assert again is not None and again is not glyph_features
    assert torch.equal(again.x(list(again.layers)), glyph_features.x(list(glyph_features.layers)))
    assert again.bn_kl == pytest.approx(glyph_features.bn_kl)
    assert store.get(feature_key(MODEL, ds.fingerprint, pretrained=False)) is None
    # A file that does not read back is removed and misses; listing and clearing see the entry.
    assert [e["model"] for e in store.entries()] == [MODEL]
    store.path(key).write_bytes(b"not a safetensors file")
    store_module._memory.clear()
    assert store.get(key) is None and not store.path(key).exists()
    store.put(glyph_features)
    assert store.clear()[0] == 1 and store.entries() == []


def test_recommend_train_and_the_ui_give_the_same_plan(glyph_data, tmp_path, capsys, monkeypatch):
    root, ds, images = glyph_data
    monkeypatch.setenv("TL_STUDIO_CACHE_DIR", str(tmp_path / "cache"))
    assert cli(["recommend", "--data", str(root), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["basis"] == "evidence" and printed["evidence"]["selected_on"] == "train-cv"
    run = tmp_path / "run"
    assert cli(["train", str(root), "--out", str(run), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    config = json.loads((run / "config.json").read_text())
    assert config["plan"] == printed["plan"]
    # Every plan the project writes is valid against the published schema.
    for written in (printed["plan"], config["plan"]):
        jsonschema.validate(written, json_schema())
    # What the UI's strategy tab shows and applies comes from the same function.
    ui = recommend_for_data(MODEL, ds, images=images)
    assert ui.recommendation.plan.to_dict() == printed["plan"]
    # The default plan on frozen features is a fitted head, chosen on training folds, reported on validation.
    assert summary["solver"] == "lbfgs" and summary["selected_on"] == "train-cv"
    assert summary["l2"] > 0 and 0.0 <= summary["val_accuracy"] <= 1.0
    assert load_run(run).plan.to_dict() == printed["plan"]


def test_a_fitted_head_matches_scikit_learn_on_the_same_features(glyph_data, glyph_features):
    """The trainer's convex head and a scikit-learn logistic regression at the same strength agree."""
    from sklearn.linear_model import LogisticRegression

    from tl_studio.probe import fit_logistic

    _, ds, _ = glyph_data
    train = torch.tensor(ds.train_idx)
    x = glyph_features.x("blocks.13", train).double()
    y = torch.tensor(ds.labels)[train]
    l2 = 1e-2
    ours = fit_logistic(x, y, len(ds.classes), l2)
    mean, std = x.mean(0), x.std(0, unbiased=False).clamp_min(1e-12)
    z = ((x - mean) / std).numpy()
    ref = LogisticRegression(C=1 / (l2 * len(y)), tol=1e-10, max_iter=10000).fit(z, y.numpy())
    assert float((ours.predict_proba(x) - torch.tensor(ref.predict_proba(z))).abs().max()) < 0.01


def test_a_body_training_plan_starts_from_a_fitted_head(tmp_path):
    from tl_studio.plan import Plan
    from tl_studio.surgery import body_layer_names
    from tl_studio.train import TrainConfig, Trainer

    from .trainkit import demo_data

    names = body_layer_names("mobilenet_v3_small")
    plan = Plan.freeze_upto("mobilenet_v3_small", 4, names, names[8])
    data = demo_data(6, 3)
    trainer = Trainer(plan, TrainConfig(device="cpu", epochs=1, batch_size=8), data, run_dir=tmp_path / "r",
                      pretrained=False)
    result = trainer.fit()
    assert result.summary["head_init"] == "fitted" and result.summary["solver"] == "adamw"
    assert result.summary["selected_on"] == "validation" and result.summary["l2"] > 0


def test_probes_perfect_on_every_fold_are_told_apart_by_their_error(tmp_path):
    """The demo saturates the probes: from blocks.1 on, every layer is perfect on every fold (SE 0), so the
    one-standard-error rule on accuracy alone picked blocks.1, the cheapest, whose head scored 0.925 on the
    validation images against 1.000 for the final layer's. The held-out error decides among them instead,
    and the chosen input's fitted head does as well on the validation images as the final layer's."""
    from tl_studio.probe import fit_head

    from .trainkit import demo_dataset

    ds = demo_dataset()
    measured = recommend_for_data(MODEL, ds, store=FeatureStore(tmp_path))
    ev, fs = measured.evidence, measured.features
    perfect = [p.layer for p in ev.curve if p.accuracy == 1.0 and p.se == 0.0]
    assert len(perfect) >= 3, "the demo no longer saturates the probes: this test shows nothing"
    assert ev.cut != perfect[0]

    train, val = torch.tensor(ds.train_idx), torch.tensor(ds.val_idx)
    labels = torch.tensor(ds.labels)

    def val_accuracy(layers):
        head = fit_head(fs.x(layers, train), labels[train], len(ds.classes))
        return float((head.fit.logits(fs.x(layers, val)).argmax(1) == labels[val]).double().mean())

    chosen = list(ev.taps or (ev.cut,))
    assert val_accuracy(chosen) >= val_accuracy([ev.curve[-1].layer])


def test_past_the_small_data_bound_the_evidence_reads_a_stratified_sample_of_the_training_images():
    from tl_studio.features.sample import MIN_PER_CLASS, PER_CLASS, evidence_rows
    from tl_studio.strategy import rules

    assert PER_CLASS == rules.SMALL_DATA  # the sample starts where the body starts to train
    # 100 training images per class on average: every image (the pass is the one the run needs anyway).
    labels = [c for c in range(3) for _ in range(101)]
    assert evidence_rows(labels, [i for i in range(303) if i % 101]) is None  # 100 per class
    assert len(evidence_rows(labels, list(range(303)))) == 3 * 51  # 101 per class
    # Classes of 12, 150 and 400 training images (and validation rows, never read): half of each class,
    # at most PER_CLASS, at least MIN_PER_CLASS.
    labels, train, val = [], [], []
    for c, (n_train, n_val) in enumerate([(12, 3), (150, 5), (400, 20)]):
        for j in range(n_train + n_val):
            (train if j < n_train else val).append(len(labels))
            labels.append(c)
    rows = evidence_rows(labels, train)
    taken = torch.bincount(torch.tensor([labels[i] for i in rows]), minlength=3).tolist()
    assert taken == [min(12, MIN_PER_CLASS), 75, PER_CLASS]
    assert set(rows) <= set(train) and rows == sorted(set(rows))
    # Decided by the labels of the training rows alone: relabelling the validation rows changes nothing.
    relabelled = list(labels)
    for i in val:
        relabelled[i] = (labels[i] + 1) % 3
    assert evidence_rows(relabelled, train) == rows == evidence_rows(labels, list(reversed(train)))


def test_a_default_run_past_the_small_data_bound_fits_its_starting_head_on_the_evidence_sample(
        tmp_path, capsys, caplog, monkeypatch):
    """Past 100 training images per class the default plan trains body layers: the evidence runs the frozen
    network over a sample of the training images only, and the starting head is the one it fitted there,
    with no pass over every image (the epochs run the network anyway). A plan that does need every image's
    features completes the sample's pass instead of running a second one."""
    root = tmp_path / "glyphs"
    glyphs.generate(root, glyphs.Spec(chars="ox", train=110, val=10, size=32, seed=5))
    cache = tmp_path / "cache"
    monkeypatch.setenv("TL_STUDIO_CACHE_DIR", str(cache))
    run = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="tl_studio"):
        assert cli(["train", str(root), "--out", str(run), "--epochs", "1", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    said = "\n".join(r.getMessage() for r in caplog.records)
    assert "a stratified sample of 110 of the 220 training images" in said
    phase = evidence_phase.PHASE.search(said)  # timed on its own, in the words figure 11b reads
    assert phase is not None and int(phase[2]) == 110
    plan = load_run(run).plan
    assert layer_states(plan).trainable_names, "the default plan trains no body layer here: this test shows nothing"
    assert summary["head_init"] == "fitted" and summary["head_rows"] == 110
    # One frozen pass was stored, of the 110 sampled images: none over all 240.
    assert [e["images"] for e in FeatureStore(cache).entries()] == [110]
    # The app measures the same (from that pass) and keeps it as evidence of the loaded data, sample or not.
    ds = load_dataset(root)
    measured = recommend_for_data(MODEL, ds, store=FeatureStore(cache))
    assert measured.features.rows == 110 and len(FeatureStore(cache).entries()) == 1  # the stored sample's
    assert measured.evidence.fingerprint == ds.fingerprint and measured.evidence.training_images == 220
    assert evidence_matches(measured.evidence, MODEL, ds)
    assert measured.recommendation.plan == plan
    # A plan that needs every image's features (a head on the frozen body) passes only the 130 others,
    # and gets the features a pass over all 240 gives.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tl_studio"):
        assert cli(["train", str(root), "--plan", "head", "--out", str(tmp_path / "head"), "--json"]) == 0
    capsys.readouterr()
    said = "\n".join(r.getMessage() for r in caplog.records)
    assert "features: 130 images through" in said and "110 more from the evidence's sample" in said
    completed = FeatureStore(cache).get(feature_key(MODEL, ds.fingerprint))
    fresh = features_for(MODEL, ImageStore(ds.paths, get_spec(MODEL).preprocess), ds.fingerprint,
                         store=FeatureStore(tmp_path / "fresh"))
    layers, sample = list(fresh.layers), evidence_rows(ds.labels, ds.train_idx)
    sampled = FeatureStore(cache).get(feature_key(MODEL, sample_fingerprint(ds.fingerprint, sample)))
    assert torch.equal(completed.x(layers, sample), sampled.x(layers))
    # The other rows ran the fast path (bf16 autocast where the CPU has it), the fresh pass's all ran the
    # BatchNorm-statistics path in float32 (240 images are within its sample): equal to bf16 rounding.
    for name in layers:
        cos = torch.nn.functional.cosine_similarity(completed.x(name), fresh.x(name), dim=1)
        assert float(cos.mean()) > 0.99 and float(cos.min()) > 0.95, (name, float(cos.mean()), float(cos.min()))
    assert float((completed.logits.argmax(1) == fresh.logits.argmax(1)).float().mean()) > 0.9
