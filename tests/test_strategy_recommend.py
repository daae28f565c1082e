"""The recommender: the source text's four corners, the monotone rules between them, plan JSON."""

import json

import pandas as pd
import pytest
import torch

from tl_studio.plan import FROZEN, Plan
from tl_studio.registry import list_models
from tl_studio.strategy import CASES, Recommendation, recommend
from tl_studio.strategy import rules, timing
from tl_studio.surgery import body_layer_names, build_model, validate

GRID_MODELS = ["efficientnet_lite0", "resnet18", "mobilenet_v3_small", "vit_b_16"]
SIZES = [5, 20, 50, 100, 150, 200, 250, 299, 300, 450, 700, 1000, 5000]
SIMILARITIES = [0.0, 0.1, 0.2, 0.25, 0.3, 0.4, 0.49, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]


def layout(rec: Recommendation) -> dict:
    """What the plan itself says, read back through the plan's own rules."""
    plan = rec.plan
    names = body_layer_names(plan.model)
    cut, taps = validate(plan)
    kept = names[: cut + 1]
    states = [plan.choice_of(n + ".weight") for n in kept]
    frozen = 0
    while frozen < len(states) and states[frozen] == FROZEN:
        frozen += 1
    assert all(s != FROZEN for s in states[frozen:]), "frozen layers must form a prefix"
    return {"cut": cut, "last": len(names) - 1, "frozen": frozen, "kept": len(kept), "taps": taps}


# ---- the four corners ---------------------------------------------------------------
CORNERS = [
    # (images per class, similarity, case)
    (20, 0.95, "small_similar"),
    (100, 0.7, "small_similar"),
    (3000, 0.95, "large_similar"),
    (1000, 0.5, "large_similar"),
    (20, 0.05, "small_different"),
    (100, 0.2, "small_different"),
    (3000, 0.05, "large_different"),
    (1000, 0.2, "large_different"),
]


@pytest.mark.parametrize("model_name", list_models())
@pytest.mark.parametrize("n, sim, case", CORNERS)
def test_corners_match_the_source_text(model_name, n, sim, case):
    rec = recommend(model_name, n, sim, 7, device="cpu")
    assert rec.case == case
    got = layout(rec)
    plan = rec.plan
    assert plan.head.num_classes == 7
    if case == "small_similar":
        # new FC head, everything else frozen, no cut
        assert got["cut"] == got["last"] and plan.cut_after is None and plan.taps == ()
        assert got["frozen"] == got["kept"]
        assert plan.head.fc_layers == 1
        assert plan.unfreeze_all_at is None
        assert rec.use_cache and rec.augment == "none" and rec.freeze_fraction == 1.0
    elif case == "large_similar" or case == "large_different":
        # new last layer, train everything (nothing frozen), no cut
        assert got["cut"] == got["last"] and plan.cut_after is None and plan.taps == ()
        assert got["frozen"] == 0 and rec.freeze_fraction == 0.0
        assert plan.head.fc_layers == 1
        assert plan.body_lr_ratio < 1.0
        assert not rec.use_cache
    else:  # small_different
        # cut most layers from the end; keep the low-level layers, frozen; add new layers
        assert plan.cut_after is not None
        assert got["cut"] + 1 <= got["last"] // 2 + 1, "most layers are removed"
        assert 0.3 <= rec.keep_fraction <= 0.5
        assert got["frozen"] == got["kept"]
        assert plan.head.fc_layers in (1, 2)
        # "sometimes it pays" to then train the whole network: an optional second stage,
        # offered in the rationale and added when asked for
        assert plan.unfreeze_all_at is None and "optional second stage" in rec.rationale
        assert rec.use_cache
        staged = recommend(model_name, n, sim, 7, device="cpu", second_stage=True)
        assert staged.plan.unfreeze_all_at is not None and 0 < staged.plan.unfreeze_all_at < staged.epochs
        assert staged.plan.body_lr_ratio < 1.0
        assert staged.plan.cut_after == plan.cut_after and staged.epochs > rec.epochs
    assert rec.rationale and "The four cases, " in rec.rationale
    assert rec.estimated_seconds > 0


# ---- between the corners ----------------------------------------------------------------
@pytest.mark.parametrize("model_name", GRID_MODELS)
def test_monotone_rules_between_the_corners(model_name):
    grid = {(n, s): layout(recommend(model_name, n, s, 5, device="cpu")) for n in SIZES for s in SIMILARITIES}
    recs = {(n, s): recommend(model_name, n, s, 5, device="cpu") for n in (SIZES[0], 300, SIZES[-1]) for s in (0.0, 1.0)}
    for (n, s), g in grid.items():
        if n >= rules.CASE_SPLIT_DATA:
            # with large data only the classifier is replaced
            assert g["cut"] == g["last"] and g["taps"] == [], (n, s)
        if s >= rules.SIMILAR:
            assert g["cut"] == g["last"], (n, s)
    for n in SIZES:
        for hi, lo in zip(SIMILARITIES[::-1], SIMILARITIES[::-1][1:]):
            a, b = grid[(n, hi)], grid[(n, lo)]
            # at a fixed size the freeze depth never rises as similarity falls
            assert b["frozen"] <= a["frozen"], (n, hi, lo)
            # the cut only moves earlier (never later) as similarity falls
            assert b["cut"] <= a["cut"], (n, hi, lo)
    for s in SIMILARITIES:
        for small, big in zip(SIZES, SIZES[1:]):
            a, b = grid[(small, s)], grid[(big, s)]
            # at a fixed similarity the freeze depth never rises as data grows
            assert b["frozen"] <= a["frozen"], (s, small, big)
            # and the cut never moves earlier as data grows
            assert b["cut"] >= a["cut"], (s, small, big)
    assert recs[(SIZES[0], 1.0)].case == "small_similar"
    assert recs[(SIZES[-1], 0.0)].case == "large_different"


def test_rule_functions_are_continuous_at_the_size_split():
    below, above = rules.CASE_SPLIT_DATA - 1e-6, rules.CASE_SPLIT_DATA
    for s in (0.0, 0.1, 0.3):
        assert abs(rules.keep_depth(below, s) - rules.keep_depth(above, s)) < 1e-4
        assert rules.keep_depth(above, s) == 1.0
        assert rules.freeze_depth(below, s) <= rules.keep_depth(below, s)


def test_taps_for_small_data_with_middling_similarity():
    rec = recommend("resnet18", 40, 0.4, 3, device="cpu")
    got = layout(rec)
    assert 2 <= len(rec.plan.taps) <= 3
    assert got["taps"][-1] == got["cut"], "the deepest tap is the last kept layer"
    assert got["frozen"] == got["kept"], "tapped features come from a frozen body (cacheable)"
    assert rec.use_cache
    assert "second way to use a base model" in rec.rationale
    # similar or clearly different small data gets no taps
    assert recommend("resnet18", 40, 0.95, 3, device="cpu").plan.taps == ()
    assert recommend("resnet18", 40, 0.05, 3, device="cpu").plan.taps == ()


# ---- plans are real: JSON round trip, validation, a forward pass ------------------------------
@pytest.mark.parametrize("n, sim", [(20, 0.95), (3000, 0.95), (20, 0.05), (3000, 0.05), (40, 0.4), (200, 0.6), (200, 0.1)])
def test_plan_json_round_trip(n, sim):
    rec = recommend("efficientnet_lite0", n, sim, 4, device="cpu")
    data = json.loads(json.dumps(rec.to_dict()))
    for key in ("case", "plan", "similarity", "images_per_class", "lr", "epochs", "batch_size",
                "augment", "use_cache", "estimated_seconds", "rationale"):
        assert key in data
    assert "sweep" not in data
    assert data["case"] in CASES
    again = Plan.from_dict(data["plan"])
    assert again == rec.plan
    validate(again)


def test_recommended_plans_build_and_run():
    for sim in (0.05, 0.4):
        rec = recommend("efficientnet_lite0", 30, sim, 3, device="cpu")
        model = build_model(rec.plan, pretrained=False).train()
        counts = model.parameter_counts()
        head = sum(p.numel() for p in model.head.parameters())
        assert counts["trainable"] == head  # every kept layer frozen: only the new head trains
        x = torch.zeros(2, 3, 224, 224)
        assert model(x).shape == (2, 3)
        h, _ = model.prefix(x)  # the whole kept body is the cacheable prefix
        assert h.shape == (2, model.feature_dim)


# ---- a sweep may move the cut, within the corner guarantees -------------------------------
def _sweep(model_name, best_layer):
    names = body_layer_names(model_name)
    return pd.DataFrame(
        [{"depth": i, "layer": n, "val_accuracy": 0.9 if n == best_layer else 0.6,
          "train_accuracy": 1.0, "feature_dim": 8} for i, n in enumerate(names)]
    )


def test_sweep_moves_the_cut_but_keeps_the_corner():
    model = "resnet18"
    base = recommend(model, 20, 0.05, 4, device="cpu")
    assert base.plan.cut_after == "layer2.0"
    early = recommend(model, 20, 0.05, 4, device="cpu", sweep=_sweep(model, "layer1.1"))
    assert early.plan.cut_after == "layer1.1"
    assert "sweep" in early.rationale
    assert early.case == "small_different" and early.keep_fraction <= 0.5
    # a sweep preferring the last layer cannot undo "remove most layers from the end"
    late = recommend(model, 20, 0.05, 4, device="cpu", sweep=_sweep(model, "pool"))
    assert late.plan.cut_after is not None and late.keep_fraction <= 0.5
    # nor can any sweep cut a small-similar plan
    sim = recommend(model, 20, 0.95, 4, device="cpu", sweep=_sweep(model, "layer1.1"))
    assert sim.plan.cut_after is None and sim.plan.taps == ()
    # but its curve still comes with the plan as evidence
    assert "Sweep evidence" in sim.rationale and "layer1.1" in sim.rationale
    # the sweep table travels in the JSON
    data = json.loads(json.dumps(early.to_dict()))
    assert [row["layer"] for row in data["sweep"]] == body_layer_names(model)


def test_sweep_chooses_the_taps():
    model = "resnet18"
    sweep = _sweep(model, "layer1.0")
    sweep.loc[sweep["layer"] == "layer2.1", "val_accuracy"] = 0.8
    rec = recommend(model, 40, 0.4, 3, device="cpu", sweep=sweep)
    assert set(rec.plan.taps) >= {"layer1.0", "layer2.1"}
    validate(rec.plan)


# ---- bad input ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, field",
    [
        (("nope", 10, 0.5, 3), "model"),
        (("resnet18", 0, 0.5, 3), "images_per_class"),
        (("resnet18", float("nan"), 0.5, 3), "images_per_class"),
        (("resnet18", 10, 1.5, 3), "similarity"),
        (("resnet18", 10, -0.1, 3), "similarity"),
        (("resnet18", 10, 0.5, 1), "num_classes"),
    ],
)
def test_bad_input_names_the_field(args, field):
    with pytest.raises(ValueError, match=field):
        recommend(*args, device="cpu")


def test_sweep_without_needed_columns_is_refused():
    with pytest.raises(ValueError, match="sweep"):
        recommend("resnet18", 20, 0.05, 3, device="cpu", sweep=pd.DataFrame({"layer": ["stem"]}))


# ---- time estimate -----------------------------------------------------------------------
def test_training_cost_follows_what_trains():
    flops = [10.0, 20.0, 30.0, 40.0]
    full = timing.training_cost(flops, 0, 4, 1.0, 100, 5, cached=False)
    assert full == pytest.approx(100 * 5 * 3 * 101)
    frozen2 = timing.training_cost(flops, 2, 4, 1.0, 100, 5, cached=False)
    assert frozen2 == pytest.approx(100 * 5 * (30 + 3 * 71))
    cached = timing.training_cost(flops, 4, 4, 1.0, 100, 5, cached=True)
    assert cached == pytest.approx(100 * (100 + 5 * 3 * 1))  # the prefix runs once
    cut = timing.training_cost(flops, 2, 2, 1.0, 100, 5, cached=True, unfreeze_all_at=3)
    assert cut == pytest.approx(100 * (30 + 3 * 3 * 1 + 2 * 3 * 31))


def test_device_rates_are_measured_once():
    a = timing.device_rates("cpu")
    assert a["dense"] > 1e6 and a["depthwise"] > 1e5
    assert timing.device_rates("cpu") == a


def test_depthwise_layers_are_found_in_the_layer_table():
    # EfficientNet-Lite0's blocks are depthwise-separable; its stem and ResNet-18 are dense
    lite = timing.depthwise_flops("efficientnet_lite0")
    assert lite[0] == 0.0 and all(f > 0 for f in lite[1:17])
    assert sum(timing.depthwise_flops("resnet18")) == 0.0
    secs = timing.layer_seconds("efficientnet_lite0", "cpu")
    assert len(secs) == len(body_layer_names("efficientnet_lite0")) and all(s >= 0 for s in secs)


def test_estimate_orders_plans_by_cost():
    cheap = recommend("efficientnet_lite0", 50, 0.9, 5, device="cpu")  # head only, cached
    dear = recommend("efficientnet_lite0", 50 * 20, 0.9, 5, device="cpu")  # everything trains
    assert cheap.use_cache and not dear.use_cache
    assert dear.estimated_seconds > 20 * cheap.estimated_seconds
