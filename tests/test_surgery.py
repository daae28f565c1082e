"""Applying plans to real models: freezing, inference-mode frozen parts, cuts, taps, heads."""

import pytest
import torch
from torch import nn

from tl_studio.plan import HeadSpec, Plan
from tl_studio.registry import list_models
from tl_studio.surgery import body_layer_names, build_model


def _bn_stats(model):
    return {
        n: b.clone()
        for n, b in model.named_buffers()
        if "running" in n or "num_batches" in n
    }


def _step(model, x, y, lr=0.1):
    opt = torch.optim.SGD([g for g in model.param_groups(lr)], lr=lr, momentum=0.9)
    loss = nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()


@pytest.mark.parametrize("model_name", ["efficientnet_lite0", "resnet18", "mobilenet_v3_small", "convnext_tiny"])
def test_one_step_changes_only_what_trains(model_name):
    names = body_layer_names(model_name)
    upto = names[len(names) // 2]
    plan = Plan.freeze_upto(model_name, 3, names, upto)
    model = build_model(plan, pretrained=False).train()
    frozen = {n: p.detach().clone() for n, p, _ in model.named_body_parameters() if not p.requires_grad}
    trained = {n: p.detach().clone() for n, p, _ in model.named_body_parameters() if p.requires_grad}
    assert frozen and trained
    stats = {k: v for k, v in _bn_stats(model).items() if int(k.split(".")[1]) <= names.index(upto)}
    x, y = torch.randn(4, 3, 224, 224), torch.tensor([0, 1, 2, 0])
    _step(model, x, y)
    now = dict((n, p) for n, p, _ in model.named_body_parameters())
    for n, before in frozen.items():
        assert torch.equal(now[n], before), f"frozen {n} moved"
    assert any(not torch.equal(now[n], before) for n, before in trained.items())
    after = _bn_stats(model)
    for k, v in stats.items():
        assert torch.equal(after[k], v), f"frozen BatchNorm statistic {k} moved"
    # The frozen prefix is a deterministic function even in train() mode.
    assert model.training
    h1, _ = model.prefix(x)
    h2, _ = model.prefix(x)
    assert torch.equal(h1, h2)


def test_bn_policy_train_moves_frozen_batchnorm():
    names = body_layer_names("resnet18")
    plan = Plan.freeze_upto("resnet18", 3, names, "layer2.1", bn="train")
    model = build_model(plan, pretrained=False).train()
    key = "body.1.bn1.running_mean"  # layer1.0, frozen
    before = dict(model.named_buffers())[key].clone()
    bn_w = model.body[1].bn1.weight.detach().clone()
    conv_w = model.body[1].conv1.weight.detach().clone()
    _step(model, torch.randn(4, 3, 224, 224), torch.tensor([0, 1, 2, 0]))
    assert not torch.equal(dict(model.named_buffers())[key], before)
    assert not torch.equal(model.body[1].bn1.weight, bn_w)
    assert torch.equal(model.body[1].conv1.weight, conv_w)


def test_frozen_dropout_and_drop_connect_are_off_in_train_mode():
    plan = Plan.head_only("efficientnet_lite0", 3)
    model = build_model(plan, pretrained=False).train()
    for stage in model.body:
        assert not any(m.training for m in stage.modules())
    assert model.head.training  # the new head's dropout does run
    full = build_model(Plan.full("efficientnet_lite0", 3), pretrained=False).train()
    # (parameter-free stages such as pooling have nothing to train: they stay in eval)
    assert all(m.training for stage in full.body if list(stage.parameters()) for m in stage.modules())


def test_frozen_prefix_runs_without_autograd():
    names = body_layer_names("resnet18")
    model = build_model(Plan.freeze_upto("resnet18", 3, names, "layer3.1"), pretrained=False).train()
    assert model.frozen_prefix() == names.index("layer3.1") + 1
    h, _ = model.prefix(torch.randn(2, 3, 224, 224))
    assert not h.requires_grad
    assert model(torch.randn(2, 3, 224, 224)).requires_grad


@pytest.mark.parametrize("model_name", list_models())
def test_cut_and_tapped_models_output_n_classes(model_name):
    names = body_layer_names(model_name)
    x = torch.randn(2, 3, 224, 224)
    cut = Plan(model=model_name, head=HeadSpec(5, hidden=32), cut_after=names[len(names) // 3], default="frozen")
    model = build_model(cut, pretrained=False).eval()
    assert model.layer_names[-1] == names[len(names) // 3]
    with torch.no_grad():
        assert model(x).shape == (2, 5)
    taps = Plan(model=model_name, head=HeadSpec(7), taps=[names[1], names[len(names) // 2], names[-1]])
    model = build_model(taps, pretrained=False).train()
    assert model(x).shape == (2, 7)


def test_taps_without_cut_remove_unused_layers():
    names = body_layer_names("resnet18")
    plan = Plan(model="resnet18", head=HeadSpec(3), taps=["layer1.1", "layer2.1"])
    model = build_model(plan, pretrained=False)
    assert model.layer_names[-1] == "layer2.1"
    assert model.feature_dim == 64 + 128


def test_discriminative_learning_rates():
    names = body_layer_names("resnet18")
    plan = Plan.freeze_upto("resnet18", 3, names, "layer2.1", body_lr_ratio=0.1)
    model = build_model(plan, pretrained=False)
    groups = model.param_groups(1e-2, weight_decay=0.05)
    by_layer = {}
    for g in groups:
        for layer in g["layers"]:
            by_layer.setdefault(layer, g["lr"])
    order = [n for n in names if n in by_layer] + ["head"]
    lrs = [by_layer[n] for n in order]
    assert order[0] == "layer3.0"
    assert lrs == sorted(lrs) and lrs[0] == pytest.approx(1e-3) and lrs[-1] == 1e-2
    # Biases and norm weights take no weight decay.
    for g in groups:
        assert all(p.ndim > 1 for p in g["params"]) or g["weight_decay"] == 0.0
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert sum(p.numel() for g in groups for p in g["params"]) == n_trainable


def test_head_with_two_fc_layers():
    model = build_model(Plan(model="resnet18", head=HeadSpec(4, hidden=64, dropout=0.5)), pretrained=False)
    linears = [m for m in model.head.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(512, 64), (64, 4)]


def test_phases_head_then_all():
    model = build_model(Plan.freeze_upto("resnet18", 3, body_layer_names("resnet18"), "layer3.1"), pretrained=False)
    model.apply_plan("head")
    assert model.parameter_counts()["trainable"] == sum(p.numel() for p in model.head.parameters())
    model.apply_plan("all")
    assert model.parameter_counts()["frozen"] == 0
