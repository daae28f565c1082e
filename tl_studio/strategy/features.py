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

import functools
import logging
import threading
from typing import Callable

import torch
from torch import nn

from .. import devices
from ..layout import layout
from ..plan import Plan
from ..preprocess import Normalize
from ..progress import EXTRACTING, Meter, Progress
from ..registry import get_spec
from ..surgery import TransferModel, body_layer_names

log = logging.getLogger(__name__)

_lock = threading.Lock()
# The BatchNorm hooks of imagenet_pass sit on the shared cached model: one pass at a time.
_pass_lock = threading.Lock()


def check_images(images: torch.Tensor, what: str = "images") -> None:
    """Clear errors for tensors that are not a batch of uint8 RGB images."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{what}: expected a uint8 tensor (N, 3, S, S), got {type(images).__name__}")
    if images.dtype != torch.uint8:
        raise ValueError(f"{what}: expected dtype uint8 (0..255 pixels), got {images.dtype}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"{what}: expected shape (N, 3, S, S), got {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError(f"{what}: no images")


def check_labels(labels: torch.Tensor, n: int, what: str = "labels") -> torch.Tensor:
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(f"{what}: expected {n} labels (one per image), got shape {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"{what}: expected integer class indices, got {labels.dtype}")
    if n and int(labels.min()) < 0:
        raise ValueError(f"{what}: class indices must be >= 0, got {int(labels.min())}")
    return labels.long()


@functools.lru_cache(maxsize=2)
def _base_model(model_name: str, pretrained: bool, device: str) -> nn.Module:
    # Building (and loading weights) costs far more than a small batch; the
    # similarity, the sweep and the UI's "measure" button reuse one copy.
    # Shared read-only: it only ever runs in eval mode under inference_mode.
    model = get_spec(model_name).build(pretrained=pretrained).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    # channels_last: measured ~25% faster for these convnets on a 2-core CPU
    # (and the fast layout on CUDA); ViT's 4-D input is only its patch conv.
    return model.to(device, memory_format=torch.channels_last)


def base_model(model_name: str, pretrained: bool = True, device: torch.device | None = None) -> nn.Module:
    """The registry's base network (ImageNet head included), cached, frozen, in eval mode."""
    device = devices.resolve(device)
    with _lock:
        return _base_model(model_name, pretrained, str(device))


def _normaliser(model_name: str, device: torch.device):
    normalize = Normalize(get_spec(model_name).preprocess).to(device)

    def norm(batch: torch.Tensor) -> torch.Tensor:
        x = normalize(batch.to(device, non_blocking=True))
        return x.contiguous(memory_format=torch.channels_last)

    return norm


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
    norm = _normaliser(model_name, device)
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


class _BNStats:
    """Per-channel sums of a BatchNorm layer's input, to compare with its running statistics."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm):
        self.bn = bn
        self.count = 0
        self.mean = None
        self.m2 = None  # sum of squared deviations from the mean, per channel

    def __call__(self, module, args):
        x = args[0].detach()
        dims = [d for d in range(x.ndim) if d != 1]
        var, mean = torch.var_mean(x.float(), dim=dims, correction=0)
        n = x.numel() // x.shape[1]
        var, mean = var.double(), mean.double()
        if self.mean is None:
            self.count, self.mean, self.m2 = n, mean, var * n
            return
        # Chan et al.'s pairwise update: exact merge of per-batch moments.
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + var * n + delta * delta * (self.count * n / total)
        self.count = total

    def kl_to_running(self) -> float:
        """Mean per-channel KL(N(batch mean, var) || N(running mean, var)), in nats.

        The running statistics are ImageNet's: how unusual these images'
        activations are at this layer for a network trained there.
        """
        mean = self.mean
        var = self.m2 / self.count + self.bn.eps
        r_mean = self.bn.running_mean.double()
        r_var = self.bn.running_var.double() + self.bn.eps
        kl = 0.5 * (var / r_var + (mean - r_mean) ** 2 / r_var - 1.0 - torch.log(var / r_var))
        return float(kl.mean())


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
    norm = _normaliser(model_name, device)
    stats = [
        _BNStats(m)
        for m in base.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None
    ]
    logits, feats = [], []
    meter = _meter(images_uint8.shape[0], publish)
    with _pass_lock:
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
