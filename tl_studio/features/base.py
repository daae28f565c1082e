"""The pretrained base network, shared and frozen, and what every feature pass needs around it.

* :func:`base_model`: the registry's network with its ImageNet head, built
  once per (model, weights, device), read-only, in eval mode, channels_last;
* :func:`normaliser`: uint8 images to the network's normalised input;
* :class:`BNStats`: a BatchNorm layer's input statistics over a pass,
  compared with the ImageNet statistics the layer stored;
* checks that name what is wrong with an images or labels tensor.
"""

from __future__ import annotations

import functools
import threading

import torch
from torch import nn

from .. import devices
from ..preprocess import Normalize
from ..registry import get_spec

_lock = threading.Lock()
# BatchNorm hooks sit on the shared cached model: one hooked pass at a time.
pass_lock = threading.Lock()


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


def normaliser(model_name: str, device: torch.device):
    normalize = Normalize(get_spec(model_name).preprocess).to(device)

    def norm(batch: torch.Tensor) -> torch.Tensor:
        x = normalize(batch.to(device, non_blocking=True))
        return x.contiguous(memory_format=torch.channels_last)

    return norm


class BNStats:
    """Per-channel sums of a BatchNorm layer's input, to compare with its running statistics."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm):
        self.bn = bn
        self.count = 0
        self.mean = None
        self.m2 = None  # sum of squared deviations from the mean, per channel

    def __call__(self, module, args):
        x = args[0].detach()
        # Channels last, as (pixels, channels): a view of the pass's channels_last maps. Mean, then the
        # mean squared deviation in place: the same moments as torch.var_mean over (N, H, W), about 5x
        # faster on those maps on a CPU (var_mean's strided reduction dominated the pass's hooked part).
        z = x.float().movedim(1, -1).reshape(-1, x.shape[1])
        mean = z.mean(0)
        dev = z - mean
        var = dev.square_().mean(0)
        n = z.shape[0]
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
