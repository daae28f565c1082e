"""Layer plans: JSON round trip and clear errors."""

import dataclasses
import json

import jsonschema
import pytest

from tl_studio.plan import HeadSpec, Plan, PlanError, json_schema
from tl_studio.surgery import body_layer_names, validate


def test_plan_round_trips_through_json():
    plan = Plan(
        model="resnet18",
        head=HeadSpec(num_classes=4, hidden=128, dropout=0.3),
        layers={"stem": "frozen", "layer1": "frozen", "layer1.1.bn2": "train"},
        default="train",
        cut_after="layer3.1",
        taps=["layer2.1", "layer3.1"],
        bn="train",
        body_lr_ratio=0.1,
        head_warmup_epochs=2,
        unfreeze_all_at=5,
    )
    text = plan.to_json()
    again = Plan.from_json(text)
    assert again == plan
    assert json.loads(again.to_json()) == json.loads(text)
    assert json.loads(text)["schema"] == "tl-studio/plan"


def test_schema_lists_every_field():
    props = set(json_schema()["properties"])
    assert props == set(Plan.full("resnet18", 2).to_dict())


@pytest.mark.parametrize(
    "change, message",
    [
        ({"layers": {"layer9.0": "frozen"}}, r"layers\['layer9.0'\]: unknown layer 'layer9.0'"),
        ({"layers": {"layer1.0": "iced"}}, "must be 'frozen' or 'train'"),
        ({"cut_after": "input"}, "cutting before the first layer"),
        ({"cut_after": ""}, "cutting before the first layer"),
        ({"cut_after": "fc"}, "unknown layer 'fc'"),
        ({"cut_after": "layer1.0.conv1"}, "is not a cut point"),
        ({"taps": ["layer4.1"], "cut_after": "layer2.0"}, "lie after cut_after"),
        ({"taps": ["nope"]}, "taps: unknown layer 'nope'"),
        ({"bn": "sometimes"}, "bn: must be one of"),
        ({"body_lr_ratio": 0}, r"body_lr_ratio: must be in \(0, 1\]"),
        ({"model": "resnet1000"}, "model: unknown model 'resnet1000'"),
    ],
)
def test_bad_plans_fail_with_a_clear_message(change, message):
    data = Plan.full("resnet18", 3).to_dict()
    data.update(change)
    with pytest.raises(PlanError, match=message):
        validate(Plan.from_dict(data))


@pytest.mark.parametrize("n", [0, 1, -3, 2.5, True])
def test_zero_or_one_class_is_refused(n):
    data = Plan.full("resnet18", 3).to_dict()
    data["head"]["num_classes"] = n
    with pytest.raises(PlanError, match="head.num_classes: must be an integer of at least 2"):
        Plan.from_dict(data)


def test_unknown_fields_and_bad_json_are_named():
    with pytest.raises(PlanError, match="unknown plan field.*freeze_everything"):
        Plan.from_dict({**Plan.full("resnet18", 3).to_dict(), "freeze_everything": True})
    with pytest.raises(PlanError, match="not valid JSON"):
        Plan.from_json("{model: resnet18")
    with pytest.raises(PlanError, match="head.num_classes: missing"):
        Plan.from_dict({"model": "resnet18", "head": {}})


def test_close_names_are_suggested():
    data = Plan.full("resnet18", 3).to_dict()
    data["layers"] = {"layer3.01": "frozen"}
    with pytest.raises(PlanError, match="did you mean"):
        validate(Plan.from_dict(data))


def test_longest_name_decides():
    plan = Plan(
        model="resnet18",
        head=HeadSpec(3),
        layers={"layer1": "frozen", "layer1.1.bn2": "train"},
        default="train",
    )
    assert plan.choice_of("layer1.0.conv1.weight") == "frozen"
    assert plan.choice_of("layer1.1.bn2.weight") == "train"
    assert plan.choice_of("layer10.weight") == "train"  # "layer1" is no prefix of "layer10"
    assert plan.choice_of("layer2.0.conv1.weight") == "train"


def test_freeze_upto_helper():
    names = body_layer_names("resnet18")
    plan = Plan.freeze_upto("resnet18", 3, names, "layer2.1")
    validate(plan)
    assert plan.choice_of("layer2.1") == "frozen" and plan.choice_of("layer3.0") == "train"
    # Canonical: only the entries that differ from the default are listed.
    assert set(plan.layers.values()) == {"frozen"}


def test_family_prefixes_are_valid_names():
    plan = Plan(model="resnet18", head=HeadSpec(3), layers={"layer1": "frozen", "stem": "frozen"})
    validate(plan)


def test_plans_are_immutable_values():
    plan = Plan.head_only("resnet18", 3, taps=["layer2.1"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.default = "train"
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.head.num_classes = 4
    with pytest.raises(TypeError, match="cannot be changed in place"):
        plan.layers["stem"] = "train"
    with pytest.raises(AttributeError):
        plan.taps.append("layer3.1")
    again = plan.with_classes(4)
    assert again.head.num_classes == 4 and plan.head.num_classes == 3
    assert hash(plan) == hash(Plan.from_json(plan.to_json()))


def test_plans_are_canonical():
    # An entry that repeats what its parent (or the default) gives is dropped; order does not matter.
    a = Plan(model="resnet18", head=HeadSpec(3), default="train",
             layers={"layer2": "frozen", "layer1": "train", "layer2.0": "frozen", "layer2.0.bn1": "train"})
    b = Plan(model="resnet18", head=HeadSpec(3), default="train",
             layers={"layer2.0.bn1": "train", "layer2": "frozen"})
    assert a == b and a.to_json() == b.to_json()
    assert list(a.layers) == ["layer2", "layer2.0.bn1"]
    # Setting a layer as a whole removes the finer entries inside it.
    c = a.with_layers(["layer2"], "train")
    assert dict(c.layers) == {} and c == Plan.full("resnet18", 3)


def test_version_1_plans_still_read():
    old = Plan.full("resnet18", 3).to_dict()
    old.update(version=1, layers={"stem": "frozen", "layer1": "train"})  # v1 could list redundant entries
    plan = Plan.from_dict(old)
    assert dict(plan.layers) == {"stem": "frozen"}
    assert plan.to_dict()["version"] == 2
    with pytest.raises(PlanError, match="reads plan versions 1, 2"):
        Plan.from_dict({**old, "version": 3})


def test_every_written_plan_validates_against_the_schema():
    schema = json_schema()
    names = body_layer_names("resnet18")
    plans = [Plan.full("resnet18", 2), Plan.head_only("resnet18", 7, taps=["layer2.1", "layer3.1"]),
             Plan.freeze_upto("resnet18", 3, names, "layer2.1", bn="train", cut_after="layer3.1")]
    for plan in plans:
        jsonschema.validate(plan.to_dict(), schema)
    bad = Plan.full("resnet18", 2).to_dict()
    bad["head"]["num_classes"] = 1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
