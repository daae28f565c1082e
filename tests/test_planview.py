"""What the UI shows about a plan agrees with the model the plan builds."""

from __future__ import annotations

import pytest

from tl_studio import planview
from tl_studio.plan import HeadSpec, Plan
from tl_studio.surgery import body_layer_names, build_model


def _plans():
    names = body_layer_names("resnet18")
    yield Plan.head_only("resnet18", 3)
    yield Plan.full("resnet18", 3)
    yield Plan.freeze_upto("resnet18", 5, names, "layer2.1", bn="train")
    yield Plan(model="resnet18", head=HeadSpec(4, hidden=32), cut_after="layer3.1", taps=["layer1.1", "layer3.1"],
               layers={"layer1": "frozen", "layer1.1.bn2": "train"}, default="train")
    lite = body_layer_names("efficientnet_lite0")
    yield Plan.freeze_upto("efficientnet_lite0", 4, lite, "blocks.9", cut_after="blocks.12")


@pytest.mark.parametrize("plan", list(_plans()), ids=lambda p: f"{p.model}-{p.default}-{p.cut_after}")
def test_counts_match_the_built_model(plan):
    model = build_model(plan, pretrained=False)
    counts = model.parameter_counts()
    s = planview.summary(plan)
    assert s["trainable"] == counts["trainable"]
    assert s["frozen"] == counts["frozen"]
    assert s["head"] == sum(p.numel() for p in model.head.parameters())
    assert s["kept_layers"] == len(model.layer_names)


def test_states_and_checklist_round_trip():
    names = body_layer_names("resnet18")
    plan = Plan(model="resnet18", head=HeadSpec(3, hidden=64), cut_after="layer3.1", taps=["layer2.1", "layer3.1"],
                layers={n: ("train" if n.startswith("layer3") else "frozen") for n in names})
    states = planview.layer_states(plan)
    by_name = dict(zip(states["name"], states["state"]))
    assert by_name["stem"] == "frozen" and by_name["layer3.0"] == "training"
    assert by_name["layer4.0"] == "removed" and by_name["new head"] == "new head"
    assert list(states.loc[states["tapped"], "name"]) == ["layer2.1", "layer3.1"]
    v = planview.checklist_values(plan, states)
    again = planview.plan_from_checklist("resnet18", 3, v["trained"], v["cut_after"], v["taps"],
                                         v["head_layers"], v["hidden"], v["dropout"], v["bn"])
    assert planview.summary(again) == planview.summary(plan)
