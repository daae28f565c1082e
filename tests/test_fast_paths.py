"""The engine's hand-made fast paths compute exactly what the library versions compute."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tl_studio.data.augment import Augment, _affine_grid
from tl_studio.lite0 import SamePadConv2d
from tl_studio.plan import Plan
from tl_studio.surgery import build_model
from tl_studio.features.fold import ConvAct, FrozenPrefix, _unpad_conv, fold_batchnorm, lower_for_cpu
from tl_studio.runs import all_finite


@pytest.mark.parametrize("kernel,stride,size", [(3, 2, 16), (5, 2, 16), (3, 2, 15), (5, 1, 12)])
def test_asymmetric_same_padding_becomes_a_larger_kernel(kernel, stride, size):
    torch.manual_seed(0)
    conv = SamePadConv2d(6, 6, kernel, stride, groups=6, image_size=size).eval()
    x = torch.randn(2, 6, size, size)
    plain = _unpad_conv(conv)
    if conv.extra_pad is None:  # symmetric: nothing to do
        assert plain is None
        return
    assert plain is not None and type(plain) is nn.Conv2d
    torch.testing.assert_close(plain(x), conv(x), rtol=0, atol=1e-5)


def test_lowering_fuses_activations_and_keeps_the_function():
    torch.manual_seed(0)
    block = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6(inplace=True),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, 1), nn.GELU(),  # oneDNN post-ops here do not include GELU: left as is
    ).eval()
    for m in block.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 3, 12, 12)
    lowered = lower_for_cpu(fold_batchnorm(block))
    fused = [m for m in lowered.modules() if isinstance(m, ConvAct)]
    if torch.backends.mkldnn.is_available():
        assert [m.attr for m in fused] == ["hardtanh", "relu"]
    assert any(isinstance(m, nn.GELU) for m in lowered.modules())
    with torch.no_grad():
        torch.testing.assert_close(lowered(x), block(x), rtol=1e-4, atol=1e-5)
        xc = x.contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(lowered(xc), block(x), rtol=1e-4, atol=1e-5)


def test_frozen_prefix_of_lite0_has_no_padding_copies_left():
    model = build_model(Plan.head_only("efficientnet_lite0", 3), pretrained=False).eval()
    fast = FrozenPrefix(model, len(model.body), torch.device("cpu"), bf16=False)
    assert fast.lowered
    assert not any(getattr(m, "extra_pad", None) for m in fast.stages.modules())
    x = torch.randn(1, 3, 224, 224)
    ref, _ = model.prefix(x, len(model.body))
    got, _ = fast(x)
    torch.testing.assert_close(got, ref, rtol=1e-3, atol=1e-3 * float(ref.abs().max()))


def test_affine_grid_matches_torch():
    theta = torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(0))
    for h, w in ((7, 9), (224, 224)):
        want = F.affine_grid(theta, [5, 3, h, w], align_corners=False)
        torch.testing.assert_close(_affine_grid(theta, h, w), want, rtol=0, atol=1e-5)


def test_colour_jitter_leaves_the_input_alone():
    x = torch.rand(4, 3, 8, 8)
    before = x.clone()
    y = Augment(color_jitter=0.4)(x, torch.Generator().manual_seed(0))
    assert torch.equal(x, before) and not torch.equal(y, x)
    assert y.min() >= 0 and y.max() <= 1


def test_all_finite_sees_one_bad_value_among_many_tensors():
    state = {f"t{i}": torch.ones(3, 4) for i in range(50)}
    state["i"] = torch.arange(4)  # integers are not checked
    state["h"] = torch.ones(2, dtype=torch.float16)
    assert all_finite(state)
    state["t31"][1, 2] = float("nan")
    assert not all_finite(state)
    state["t31"][1, 2] = 0
    state["h"][0] = float("inf")
    assert not all_finite(state)
