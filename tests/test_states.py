"""One rule for layer state: the counts every view shows equal what the built model trains."""

from __future__ import annotations

import functools
import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tl_studio.layout import layout
from tl_studio.plan import FROZEN, TRAIN, HeadSpec, Plan
from tl_studio.registry import get_spec, list_models
from tl_studio.states import FROZEN_S, REMOVED_S, TRAINS_S, layer_states, phase_plan
from tl_studio.surgery import TransferModel, body_layer_names, build_model
from tl_studio.ui import checklist


@functools.cache
def _base(model: str):
    with torch.random.fork_rng(devices=[]):
        return get_spec(model).build(pretrained=False)


@st.composite
def plans(draw, model: str):
    lay = layout(model)
    names = list(lay.names)
    # Any name a plan may use: whole layers, families, modules and single parameters.
    known = sorted(lay.known_names)
    entries = draw(st.dictionaries(st.sampled_from(known), st.sampled_from([FROZEN, TRAIN]), max_size=6))
    cut = draw(st.one_of(st.none(), st.integers(0, len(names) - 1)))
    last = len(names) - 1 if cut is None else cut
    taps = draw(st.lists(st.sampled_from(names[: last + 1]), max_size=3, unique=True))
    if cut is None and taps:
        cut_name = None  # the last tap cuts
    else:
        cut_name = None if cut is None else names[cut]
    return Plan(
        model=model,
        head=HeadSpec(draw(st.integers(2, 5)), hidden=draw(st.sampled_from([0, 8]))),
        layers=entries,
        default=draw(st.sampled_from([FROZEN, TRAIN])),
        cut_after=cut_name,
        taps=tuple(taps),
        bn=draw(st.sampled_from(["frozen", "train"])),
    )


def _requires_grad(model: TransferModel) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters()) - trainable


@pytest.mark.parametrize("model_name", list_models())
def test_counts_equal_the_built_model_for_random_plans(model_name):
    base = _base(model_name)

    @settings(max_examples=12, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(plan=plans(model_name), phase=st.sampled_from(["plan", "head", "all"]))
    def check(plan, phase):
        model = TransferModel(plan, base)
        model.apply_plan(phase)
        st_ = layer_states(phase_plan(plan, phase))
        trainable, frozen = _requires_grad(model)
        assert st_.trainable == trainable
        assert st_.frozen == frozen
        assert st_.head.params == sum(p.numel() for p in model.head.parameters())
        assert st_.cut + 1 == len(model.layer_names)
        names = {n for n, p, _ in model.named_body_parameters() if p.requires_grad}
        assert names == st_.trainable_names

    check()


def test_states_of_a_cut_and_tapped_plan():
    names = body_layer_names("resnet18")
    plan = Plan(model="resnet18", head=HeadSpec(3, hidden=64), cut_after="layer3.1", taps=["layer2.1", "layer3.1"],
                layers={n: ("train" if n.startswith("layer3") else "frozen") for n in names})
    st_ = layer_states(plan)
    by_name = {s.name: s for s in st_.layers}
    assert by_name["stem"].state == FROZEN_S and by_name["layer3.0"].state == TRAINS_S
    assert by_name["layer4.0"].state == REMOVED_S and by_name["layer4.0"].trainable == 0
    assert [s.name for s in st_.layers if s.tapped] == ["layer2.1", "layer3.1"]
    assert st_.rows()[-1]["state"] == "new head"


def test_batchnorm_policy_is_an_annotation_not_a_state():
    plan = Plan.head_only("resnet18", 3)
    bn = layer_states(Plan.head_only("resnet18", 3, bn="train"))
    plain = layer_states(plan)
    # The layers stay frozen (and unticked); only their BatchNorm parameters train.
    assert [s.state for s in bn.layers] == [s.state for s in plain.layers]
    assert bn.ticked == plain.ticked == []
    assert all(s.bn_trains for s in bn.layers if any(p.is_bn for p in layout("resnet18").layer(s.name).params))
    bn_params = sum(p.numel for s in layout("resnet18").body for p in s.params if p.is_bn)
    assert bn.trainable == plain.trainable + bn_params
    assert bn.frozen_compute_share == plain.frozen_compute_share == 1.0


@pytest.mark.parametrize("model_name", ["resnet18", "efficientnet_lite0"])
def test_batchnorm_round_trip_through_the_checklist_leaves_the_plan(model_name):
    plan = Plan.head_only(model_name, 3)
    st0 = layer_states(plan)
    head_layers, hidden, dropout = checklist.head_values(plan)
    with_bn = checklist.edit_plan(plan, st0.ticked, None, [], head_layers, hidden, dropout, "train")
    st1 = layer_states(with_bn)
    bn_params = sum(p.numel for s in layout(model_name).body for p in s.params if p.is_bn)
    assert st1.ticked == st0.ticked
    assert st1.trainable == st0.trainable + bn_params
    # Unticking a layer that is already unticked, then switching back: the same plan.
    again = checklist.edit_plan(with_bn, st1.ticked, None, [], head_layers, hidden, dropout, "frozen")
    assert again == plan and layer_states(again).trainable == st0.trainable == st0.head.params


def test_ticking_and_unticking_every_layer_returns_the_same_plan():
    names = body_layer_names("efficientnet_lite0")
    plan = Plan(model="efficientnet_lite0", head=HeadSpec(4, hidden=32), cut_after="blocks.12",
                taps=["blocks.5", "blocks.12"], layers={"blocks.3": "train", "blocks.7": "train"},
                default=FROZEN, bn="train")
    args = (plan.cut_after, list(plan.taps), 2, 32, plan.head.dropout, plan.bn)
    current = plan
    for name in names:
        ticked = layer_states(current).ticked
        flipped = [n for n in ticked if n != name] if name in ticked else ticked + [name]
        current = checklist.edit_plan(current, flipped, *args)
        back = [n for n in layer_states(current).ticked if n != name] if name not in ticked \
            else layer_states(current).ticked + [name]
        current = checklist.edit_plan(current, back, *args)
    assert current.to_json() == checklist.edit_plan(plan, layer_states(plan).ticked, *args).to_json()


def test_finer_entries_show_as_partial_and_survive_other_edits():
    plan = Plan(model="resnet18", head=HeadSpec(3), default=FROZEN, layers={"layer2.0.conv1": "train"})
    st_ = layer_states(plan)
    row = {s.name: s for s in st_.layers}["layer2.0"]
    assert row.state == FROZEN_S and row.partial and row.trainable > 0
    # Ticking another layer keeps the finer entry.
    edited = checklist.edit_plan(plan, ["layer3.0"], None, [], 1, 256, 0.2, "frozen")
    assert edited.choice_of("layer2.0.conv1.weight") == TRAIN and edited.choice_of("layer3.0") == TRAIN
    # Ticking the layer itself sets it as a whole.
    whole = checklist.edit_plan(plan, ["layer2.0"], None, [], 1, 256, 0.2, "frozen")
    assert dict(whole.layers) == {"layer2.0": TRAIN}


def test_counts_line_shows_exact_integers():
    st_ = layer_states(Plan.head_only("efficientnet_lite0", 4))
    text = checklist.stats_text(st_)
    assert f"**Trainable:** {st_.trainable:,} parameters" in text and st_.trainable == 1280 * 4 + 4


def test_the_flops_bars_are_flops():
    st_ = layer_states(Plan.head_only("resnet18", 3))
    params, flops = checklist.network_frame(st_, "params"), checklist.network_frame(st_, "FLOPs")
    lay = layout("resnet18")
    assert list(flops["size"][:-1]) == [float(s.flops) for s in lay.body]
    assert list(params["size"][:-1]) == [float(s.n_params) for s in lay.body]
    assert set(params["state"]) <= set(checklist.STATE_COLOURS)


def test_the_built_model_agrees_with_a_plan_from_the_checklist():
    plan = Plan.freeze_upto("resnet18", 5, body_layer_names("resnet18"), "layer2.1", bn="train")
    model = build_model(plan, pretrained=False)
    s = layer_states(plan)
    assert (s.trainable, s.frozen) == _requires_grad(model)


def test_the_cli_layers_view_reads_the_same_rule(tmp_path, capsys):
    from tl_studio.cli.main import main

    plan = Plan.freeze_upto("resnet18", 3, body_layer_names("resnet18"), "layer2.1", bn="train",
                            cut_after="layer4.0", taps=("layer3.1", "layer4.0"))
    path = tmp_path / "plan.json"
    path.write_text(plan.to_json())
    assert main(["layers", "resnet18", "--plan", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {r["name"]: r for r in out["layers"]}
    st = layer_states(plan)
    assert [rows[s.name]["state"] for s in st.layers] == [s.state for s in st.layers]
    assert sum(r["trainable"] for r in out["layers"]) + st.head.params == out["summary"]["trainable"]
    model = build_model(plan, pretrained=False)
    assert out["summary"]["trainable"] == _requires_grad(model)[0]
    assert rows["layer4.1"]["state"] == REMOVED_S and rows["fc"]["state"] == "replaced"
