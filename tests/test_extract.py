"""The folded frozen prefix computes what the plain frozen layers compute."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tl_studio.plan import Plan
from tl_studio.registry import list_models
from tl_studio.surgery import body_layer_names, build_model
from tl_studio.features.fold import FrozenPrefix, fold_batchnorm


@pytest.mark.parametrize("model_name", list_models())
def test_folded_prefix_matches_the_model(model_name):
    names = body_layer_names(model_name)
    taps = [names[2], names[len(names) // 2]]
    plan = Plan(model=model_name, head=Plan.head_only(model_name, 3).head, taps=taps, default="frozen")
    model = build_model(plan, pretrained=model_name == "efficientnet_lite0").train()
    # Randomise BatchNorm statistics so that folding has real work to do.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    k = model.frozen_prefix()
    fast = FrozenPrefix(model, k, torch.device("cpu"), channels_last=True, bf16=False)
    x = torch.randn(2, 3, 224, 224)
    h_ref, f_ref = model.prefix(x, k)
    h, f = fast(x)
    # Folding reorders float arithmetic: equal to ~1e-3 relative to the activation scale.
    torch.testing.assert_close(h, h_ref, rtol=1e-3, atol=1e-3 * float(h_ref.abs().max()))
    assert len(f) == len(f_ref)
    if any(isinstance(m, nn.BatchNorm2d) for m in model.body.modules()):
        assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.stages.modules()), "BatchNorm left unfolded"


def test_folding_leaves_the_original_untouched():
    model = build_model(Plan.head_only("resnet18", 3), pretrained=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fold_batchnorm(model.body[1])
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_bf16_extraction_stays_close():
    """The bf16 path (used only on CPUs with native bf16) keeps features close to fp32."""
    model = build_model(Plan.head_only("efficientnet_lite0", 3), pretrained=True).eval()
    k = model.frozen_prefix()
    x = torch.rand(2, 3, 224, 224) * 2 - 1
    ref, _ = FrozenPrefix(model, k, torch.device("cpu"), bf16=False)(x)
    low, _ = FrozenPrefix(model, k, torch.device("cpu"), bf16=True)(x)
    assert low.dtype == torch.float32
    # bf16 keeps ~3 significant digits through 16 blocks: features agree in
    # direction (what a linear probe uses); bench/ measures the probe accuracy itself.
    cos = torch.nn.functional.cosine_similarity(low, ref, dim=1)
    assert (cos > 0.99).all()
    assert (low - ref).norm() / ref.norm() < 0.15


def test_timm_norm_layers_fold_or_stay_as_they_are():
    """timm's BatchNormAct2d folds and keeps its activation; a weight-standardised conv is never folded into."""
    from timm.layers import BatchNormAct2d, StdConv2d

    def randomised(bn):
        with torch.no_grad():
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
        return bn

    x = torch.randn(2, 3, 16, 16)
    act = nn.Sequential(nn.Conv2d(3, 8, 3), randomised(BatchNormAct2d(8, act_layer=nn.ReLU))).eval()
    folded = fold_batchnorm(act)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.ReLU) for m in folded.modules())  # the activation stays
    torch.testing.assert_close(folded(x), act(x), rtol=1e-4, atol=1e-5)
    std = nn.Sequential(StdConv2d(3, 8, 3), randomised(nn.BatchNorm2d(8))).eval()
    kept = fold_batchnorm(std)
    assert any(isinstance(m, nn.BatchNorm2d) for m in kept.modules())
    torch.testing.assert_close(kept(x), std(x))
