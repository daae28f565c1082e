"""Frozen-backbone feature extraction for the strategy layer, in one place.

Two passes live here:

* :func:`pooled_features`: globally pooled outputs of chosen body layers, all
  from ONE forward pass (a head-only plan whose taps are those layers, so
  ``TransferModel.prefix`` returns them concatenated and stops after the
  deepest one). The freeze-depth sweep uses it. The training engine's owner
  may swap its internals for the frozen-feature cache; keep the signature.
* :func:`imagenet_pass`: what the pretrained network as a whole says about
  the images (ImageNet logits, penultimate features and how far each
  BatchNorm layer's input statistics lie from the ImageNet statistics the
  layer stored). Measured similarity uses it.

Images arrive as uint8 tensors (N, 3, S, S) already resized and cropped to
the model's input size; :class:`tl_studio.preprocess.Normalize` scales and
normalises them with the model's own mean and std.
"""

from __future__ import annotations

import logging
from typing import Callable

import torch
from torch import nn

from .. import devices
from ..features.base import BNStats, base_model, check_images, check_labels, normaliser, pass_lock
from ..layout import layout
from ..plan import Plan
from ..progress import EXTRACTING, Meter, Progress
from ..registry import get_spec
from ..surgery import TransferModel, body_layer_names

__all__ = ["base_model", "check_images", "check_labels", "imagenet_pass", "pooled_features", "pooled_widths"]

log = logging.getLogger(__name__)

def pooled_widths(model_name: str, layers: list[str]) -> list[int]:
    """Width of each layer's globally pooled output, from the model's layout."""
    lay = layout(model_name)
    return [lay.layer(name).pooled_width for name in layers]


def pooled_features(
    model_name: str,
    images_uint8: torch.Tensor,
    layers: list[str],
    *,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    pretrained: bool = True,
    publish: Callable[[Progress], None] | None = None,
) -> dict[str, torch.Tensor]:
    """Globally pooled outputs of ``layers`` (body layer names) for every image, in one pass.

    Returns ``{layer: float32 CPU tensor (N, width)}`` in the order given.
    ``publish`` hears an "extracting" :class:`~tl_studio.progress.Progress` per batch.
    """
    check_images(images_uint8)
    if not layers:
        raise ValueError("layers: name at least one body layer")
    known = body_layer_names(model_name)
    order = sorted(set(layers), key=known.index) if set(layers) <= set(known) else list(layers)
    device = devices.resolve(device)
    # validate() inside TransferModel names any unknown layer with close matches.
    plan = Plan.head_only(model_name, 2, taps=order)
    base = base_model(model_name, pretrained, device)
    model = TransferModel(plan, base).eval()
    widths = pooled_widths(model_name, order)
    norm = normaliser(model_name, device)
    chunks = []
    meter = _meter(images_uint8.shape[0], publish)
    with torch.inference_mode():
        for start in range(0, images_uint8.shape[0], batch_size):
            h, _ = model.prefix(norm(images_uint8[start : start + batch_size]))
            chunks.append(h.float().cpu())
            meter(start + h.shape[0])
    flat = torch.cat(chunks)
    parts = dict(zip(order, torch.split(flat, widths, dim=1)))
    return {name: parts[name].contiguous() for name in layers}


def imagenet_pass(
    model_name: str,
    images_uint8: torch.Tensor,
    *,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    pretrained: bool = True,
    publish: Callable[[Progress], None] | None = None,
) -> dict:
    """Run the whole pretrained network once over the images (``publish``: as for :func:`pooled_features`).

    Returns ``logits`` (N, 1000) and ``features`` (N, D: the classifier's
    input, i.e. the penultimate features), both float32 on the CPU, and
    ``bn_kl``: for each BatchNorm layer with running statistics (in network
    order), the mean per-channel KL divergence between these images'
    activation statistics and ImageNet's. Models without BatchNorm
    (ConvNeXt, ViT use LayerNorm) give an empty ``bn_kl``.
    """
    check_images(images_uint8)
    device = devices.resolve(device)
    spec = get_spec(model_name)
    base = base_model(model_name, pretrained, device)
    stages = spec.stages(base)
    norm = normaliser(model_name, device)
    stats = [
        BNStats(m)
        for m in base.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None
    ]
    logits, feats = [], []
    meter = _meter(images_uint8.shape[0], publish)
    with pass_lock:
        hooks = [s.bn.register_forward_pre_hook(s) for s in stats]
        try:
            with torch.inference_mode():
                for start in range(0, images_uint8.shape[0], batch_size):
                    x = norm(images_uint8[start : start + batch_size])
                    for st in stages:
                        if st.role == "classifier":
                            feats.append(x.flatten(1).float().cpu())
                        x = st.module(x)
                    logits.append(x.float().cpu())
                    meter(start + x.shape[0])
        finally:
            for h in hooks:
                h.remove()
    return {
        "logits": torch.cat(logits),
        "features": torch.cat(feats),
        "bn_kl": [s.kl_to_running() for s in stats],
    }


def _meter(total: int, publish: Callable[[Progress], None] | None) -> Callable[[int], object]:
    """``update(done)`` of an "extracting" meter, or a no-op without a listener."""
    if publish is None:
        return lambda done: None
    return Meter(EXTRACTING, total, "images", publish).update
