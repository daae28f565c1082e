"""How each model family's layers group into an ordered list of stages.

Every registered network is decomposed into a flat sequence of stages whose
composition *is* the model: ``classifier(...stage_2(stage_1(stage_0(x))))``.
That is what makes the checklist, the cut point (a suffix of stages removed)
and taps (outputs of chosen stages) simple index arithmetic, in the spirit of
fastai's ``cut``/``split`` meta and timm's ``group_matcher``.

The stage modules are the base model's own submodules (no copies), wrapped in
small containers only where the original forward does work between modules
(ViT's token handling, flattening before a classifier).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Stage:
    name: str  # stable name: what the checklist and plans use
    module: nn.Module
    kind: str  # "stem", "block", "downsample", "conv", "norm", "pool", "fc", "embed"
    group: str  # the coarser stage it belongs to (e.g. "layer3"), for plots
    role: str = "body"  # "body" or "classifier" (the layer the new head replaces)


class Flatten2d(nn.Sequential):
    """Global average pool + flatten: the canonical CNN pooling stage."""

    def __init__(self, pool: nn.Module | None = None):
        super().__init__(OrderedDict(avgpool=pool or nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(1)))


class ViTPatchify(nn.Module):
    """ViT's patch embedding; output stays (B, D, h, w) so it pools like a CNN map."""

    def __init__(self, conv_proj: nn.Conv2d):
        super().__init__()
        self.conv_proj = conv_proj

    def forward(self, x):
        return self.conv_proj(x)


class ViTTokens(nn.Module):
    """Flatten patches to tokens, prepend the class token, add position embeddings.

    These parameters belong to no layer in torchvision's module tree; giving
    them a row of their own is what makes "freeze all" really freeze all.
    """

    def __init__(self, vit: nn.Module):
        super().__init__()
        self.class_token = vit.class_token
        self.pos_embedding = vit.encoder.pos_embedding
        self.dropout = vit.encoder.dropout

    def forward(self, x):
        n = x.shape[0]
        x = x.flatten(2).transpose(1, 2)
        x = torch.cat([self.class_token.expand(n, -1, -1), x], dim=1)
        return self.dropout(x + self.pos_embedding)


class GlobalPool(nn.Module):
    """Pool whatever a layer outputs to one vector per image (what a tap or a cut body feeds the head).

    (B, C, H, W) maps average over space; (B, D) vectors pass through.
    (B, N, D) token sequences pool as the model pools them: timm's ViTs keep
    the class token (``global_pool="token"``) or average the patch tokens
    after their ``num_prefix_tokens`` (class and register tokens); any other
    model averages every token.
    """

    def __init__(self, tokens: str = "avg", prefix_tokens: int = 0):
        super().__init__()
        self.tokens = tokens
        self.prefix_tokens = prefix_tokens

    @classmethod
    def for_model(cls, base: nn.Module) -> "GlobalPool":
        """The pooling a base model's tokens need, read from timm's attributes when it has them."""
        pool, prefix = getattr(base, "global_pool", None), getattr(base, "num_prefix_tokens", None)
        if isinstance(pool, str) and isinstance(prefix, int):
            if pool == "token" and prefix > 0:
                return cls("token", prefix)
            return cls("avg", prefix)
        return cls()

    def forward(self, x):
        if x.ndim == 4:
            return x.mean(dim=(2, 3))
        if x.ndim == 3:
            if self.tokens == "token":
                return x[:, 0]
            return x[:, self.prefix_tokens:].mean(dim=1)
        return x.flatten(1)

    def extra_repr(self) -> str:
        return f"tokens={self.tokens!r}, prefix_tokens={self.prefix_tokens}" if self.prefix_tokens else ""


class ClassToken(nn.Module):
    """ViT's own pooling: the class token."""

    def forward(self, x):
        return x[:, 0]


def efficientnet_lite(model: nn.Module) -> list[Stage]:
    stages = [Stage("stem", model.stem, "stem", "stem")]
    # Stage boundaries of Lite0 blocks (for grouping in plots): 1,2,2,3,3,4,1.
    bounds = [1, 2, 2, 3, 3, 4, 1]
    idx = 0
    for g, n in enumerate(bounds, start=1):
        for _ in range(n):
            stages.append(Stage(f"blocks.{idx}", model.blocks[idx], "block", f"stage{g}"))
            idx += 1
    stages += [
        Stage("conv_head", model.conv_head, "conv", "head"),
        Stage("pool", model.pool, "pool", "head"),
        Stage("classifier", model.classifier, "fc", "classifier", role="classifier"),
    ]
    return stages


def resnet(model: nn.Module) -> list[Stage]:
    stem = nn.Sequential(
        OrderedDict(conv1=model.conv1, bn1=model.bn1, relu=model.relu, maxpool=model.maxpool)
    )
    stages = [Stage("stem", stem, "stem", "stem")]
    for layer in ("layer1", "layer2", "layer3", "layer4"):
        for i, block in enumerate(getattr(model, layer)):
            stages.append(Stage(f"{layer}.{i}", block, "block", layer))
    stages += [
        Stage("pool", Flatten2d(model.avgpool), "pool", "head"),
        Stage("fc", model.fc, "fc", "classifier", role="classifier"),
    ]
    return stages


def mobilenet_v3(model: nn.Module) -> list[Stage]:
    feats = model.features
    stages = [Stage("features.0", feats[0], "stem", "stem")]
    for i in range(1, len(feats) - 1):
        stages.append(Stage(f"features.{i}", feats[i], "block", "blocks"))
    last = len(feats) - 1
    cls = model.classifier  # Linear, Hardswish, Dropout, Linear
    stages += [
        Stage(f"features.{last}", feats[last], "conv", "head"),
        Stage("pool", Flatten2d(model.avgpool), "pool", "head"),
        Stage("pre_logits", nn.Sequential(OrderedDict(fc=cls[0], act=cls[1], drop=cls[2])), "fc", "head"),
        Stage("classifier", cls[3], "fc", "classifier", role="classifier"),
    ]
    return stages


def efficientnet(model: nn.Module) -> list[Stage]:
    feats = model.features
    stages = [Stage("features.0", feats[0], "stem", "stem")]
    for s in range(1, len(feats) - 1):
        for b, block in enumerate(feats[s]):
            stages.append(Stage(f"features.{s}.{b}", block, "block", f"stage{s}"))
    last = len(feats) - 1
    stages += [
        Stage(f"features.{last}", feats[last], "conv", "head"),
        Stage("pool", Flatten2d(model.avgpool), "pool", "head"),
        Stage("classifier", model.classifier, "fc", "classifier", role="classifier"),
    ]
    return stages


def convnext(model: nn.Module) -> list[Stage]:
    feats = model.features
    stages = [Stage("features.0", feats[0], "stem", "stem")]
    for s in range(1, len(feats)):
        if s % 2 == 0:  # even entries are the downsampling layers between stages
            stages.append(Stage(f"features.{s}", feats[s], "downsample", f"stage{s // 2 + 1}"))
            continue
        for b, block in enumerate(feats[s]):
            stages.append(Stage(f"features.{s}.{b}", block, "block", f"stage{s // 2 + 1}"))
    norm, _flatten, fc = model.classifier
    stages += [
        Stage("pool", model.avgpool, "pool", "head"),
        Stage("norm", nn.Sequential(OrderedDict(norm=norm, flatten=nn.Flatten(1))), "norm", "head"),
        Stage("classifier", fc, "fc", "classifier", role="classifier"),
    ]
    return stages


def vit(model: nn.Module) -> list[Stage]:
    stages = [
        Stage("conv_proj", ViTPatchify(model.conv_proj), "embed", "embed"),
        Stage("embeddings", ViTTokens(model), "embed", "embed"),
    ]
    for i, layer in enumerate(model.encoder.layers):
        stages.append(Stage(f"encoder.{i}", layer, "block", "encoder"))
    stages += [
        Stage("norm", model.encoder.ln, "norm", "head"),
        Stage("pool", ClassToken(), "pool", "head"),
    ]
    heads = model.heads
    if hasattr(heads, "pre_logits"):
        stages.append(
            Stage("pre_logits", nn.Sequential(heads.pre_logits, heads.act), "fc", "head")
        )
    stages.append(Stage("classifier", heads.head, "fc", "classifier", role="classifier"))
    return stages
