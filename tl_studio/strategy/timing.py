"""An estimate of training time from the layer table and measured device rates.

The layer table gives each layer's forward FLOPs at the model's input size
(one image). FLOPs alone mislead: on a CPU a dense 3x3 convolution runs ~10x
more FLOPs per second than a depthwise one, so a ResNet and an EfficientNet of
equal FLOPs differ several-fold in time. Each body layer's forward time per
image is therefore its dense FLOPs over a measured dense-convolution rate plus
its depthwise FLOPs over a measured depthwise rate (both measured once per
process on the device, with small workloads of exactly those layer kinds).

A training step costs about 1x the forward time in frozen layers (no
backward: they run under no_grad), 3x in trained layers (forward, then a
backward of about twice the forward), and nothing per epoch in a prefix the
feature cache has stored (it runs once, to fill the cache).

It is an estimate. Measured on a (busy) 2-core CPU against real forward
passes at batch 32: ResNet-18 ~25% pessimistic, EfficientNet-Lite0 ~30%
optimistic, MobileNetV3-Small ~4x optimistic (its time goes to small
squeeze-excite and hard-swish layers that FLOPs barely see). A single
FLOPs rate instead was 10x off for ResNet-18. Data loading, augmentation and
validation passes are not in it.
"""

from __future__ import annotations

import functools
import logging
import threading
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .. import devices
from ..layout import layout

log = logging.getLogger(__name__)

BENCH_SECONDS = 0.15  # per workload and device, once per process: long enough to average out jitter
FORWARD, BACKWARD = 1.0, 2.0  # cost of backward relative to forward
# A convolution whose every output channel reads k*k weights (plus a bias) of one
# input channel is depthwise; dense stems read 3 channels (27 or 147 weights).
_DEPTHWISE_WEIGHTS = {k * k + b for k in (3, 5, 7) for b in (0, 1)}

_lock = threading.Lock()


def _workloads() -> dict[str, tuple[nn.Module, tuple[int, ...]]]:
    return {
        "dense": (
            nn.Sequential(nn.Conv2d(64, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU()),
            (8, 64, 56, 56),
        ),
        "depthwise": (
            nn.Sequential(nn.Conv2d(96, 96, 3, padding=1, groups=96, bias=False), nn.BatchNorm2d(96), nn.ReLU6()),
            (8, 96, 56, 56),
        ),
    }


def _rate(net: nn.Module, shape: tuple[int, ...], dev: torch.device) -> float:
    net = net.eval().to(dev, memory_format=torch.channels_last)
    x = torch.randn(shape, device=dev).contiguous(memory_format=torch.channels_last)
    with FlopCounterMode(display=False) as counter:
        net(x)
    flops = counter.get_total_flops()  # counted as the layer table counts them

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    with torch.inference_mode():
        net(x)  # warm-up: allocator, kernels, cuDNN choice
        sync()
        start, runs = time.perf_counter(), 0
        while True:
            net(x)
            runs += 1
            if runs % 4 == 0 or dev.type == "cpu":
                sync()
                elapsed = time.perf_counter() - start
                if elapsed >= BENCH_SECONDS:
                    break
    return flops * runs / elapsed


@functools.cache
def _measure(device: str) -> dict[str, float]:
    dev = torch.device(device)
    rates = {kind: _rate(net, shape, dev) for kind, (net, shape) in _workloads().items()}
    log.debug("device %s: %s GFLOP/s", device, {k: round(v / 1e9, 2) for k, v in rates.items()})
    return rates


def device_rates(device: str | torch.device | None = None) -> dict[str, float]:
    """Forward FLOPs per second on ``device`` for dense and depthwise convolutions (cached)."""
    dev = devices.resolve(device)
    with _lock:
        return dict(_measure(str(dev)))


def device_flops_per_second(device: str | torch.device | None = None) -> float:
    """The dense-convolution rate: what a matrix-heavy layer (and the new head) runs at."""
    return device_rates(device)["dense"]


@functools.cache
def depthwise_flops(model_name: str) -> tuple[float, ...]:
    """Forward FLOPs per image in depthwise convolutions, for each coarse layer (by depth)."""
    lay = layout(model_name)
    out = [0.0] * len(lay.stages)
    for row in lay.fine:
        if "Conv" not in row.module or not row.output_shape:
            continue
        channels = row.output_shape[0]
        if channels and row.params % channels == 0 and row.params // channels in _DEPTHWISE_WEIGHTS:
            out[row.depth] += float(row.flops)
    return tuple(out)


def layer_seconds(model_name: str, device: str | torch.device | None = None) -> list[float]:
    """Estimated forward seconds per image of each body layer on ``device``."""
    rates = device_rates(device)
    dw = depthwise_flops(model_name)
    out = []
    for row in layout(model_name).body:
        d = min(dw[row.index], float(row.flops))
        out.append((float(row.flops) - d) / rates["dense"] + d / rates["depthwise"])
    return out


def training_cost(
    layer_costs: list[float],
    frozen: int,
    kept: int,
    head_cost: float,
    images: float,
    epochs: int,
    *,
    cached: bool,
    unfreeze_all_at: int | None = None,
) -> float:
    """Total cost of a training run, in the unit of ``layer_costs`` (FLOPs or seconds).

    ``layer_costs``: forward cost per image of each body layer; the first
    ``frozen`` are frozen, the first ``kept`` are kept (the rest are cut).
    From epoch ``unfreeze_all_at`` every kept layer trains and the cache no
    longer applies.
    """
    kept_costs = layer_costs[:kept]
    frozen_c = sum(kept_costs[:frozen])
    trained_c = sum(kept_costs[frozen:])
    stage1 = epochs if unfreeze_all_at is None else min(unfreeze_all_at, epochs)
    stage2 = epochs - stage1
    train_step = (FORWARD + BACKWARD) * (trained_c + head_cost)
    if cached:
        per_image = frozen_c + stage1 * train_step  # the prefix runs once, to fill the cache
    else:
        per_image = stage1 * (FORWARD * frozen_c + train_step)
    per_image += stage2 * (FORWARD + BACKWARD) * (sum(kept_costs) + head_cost)
    return per_image * images
