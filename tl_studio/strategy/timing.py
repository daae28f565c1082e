"""An estimate of training time from FLOPs and a measured device rate.

The layer table gives each layer's forward FLOPs at the model's input size
(one image). A training step costs about 1x forward FLOPs in frozen layers
(no backward: they run under no_grad), 3x in trained layers (forward, then a
backward of about twice the forward), and nothing per epoch in a prefix the
feature cache has stored (it runs once, to fill the cache). Dividing by a
rate measured once per process on the device, with a tiny workload of the
same kinds of layers these networks use (dense 3x3, 1x1 and depthwise
convolutions with BatchNorm), gives seconds.

It is an estimate: data loading, augmentation, validation passes, kernel
launch overheads and per-model efficiency differences (a dense ResNet runs
closer to the device peak than a depthwise-heavy EfficientNet) are not in it.
"""

from __future__ import annotations

import functools
import logging
import threading
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

log = logging.getLogger(__name__)

BENCH_SECONDS = 0.25  # per device, once per process: long enough to average out jitter
FORWARD, BACKWARD = 1.0, 2.0  # FLOPs of backward relative to forward

_lock = threading.Lock()


def _bench_net() -> nn.Module:
    # One dense 3x3 conv and one inverted-residual block (1x1 expand,
    # depthwise 3x3, 1x1 project): the mix of ResNets and MobileNets.
    return nn.Sequential(
        nn.Conv2d(32, 32, 3, padding=1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.Conv2d(32, 96, 1, bias=False),
        nn.BatchNorm2d(96),
        nn.ReLU6(),
        nn.Conv2d(96, 96, 3, padding=1, groups=96, bias=False),
        nn.BatchNorm2d(96),
        nn.ReLU6(),
        nn.Conv2d(96, 32, 1, bias=False),
        nn.BatchNorm2d(32),
    ).eval()


@functools.cache
def _measure(device: str) -> float:
    dev = torch.device(device)
    net = _bench_net().to(dev)
    x = torch.randn(8, 32, 56, 56, device=dev)
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
    rate = flops * runs / elapsed
    log.debug("device %s: %.1f GFLOP/s on the timing workload", device, rate / 1e9)
    return rate


def device_flops_per_second(device: str | torch.device | None = None) -> float:
    """Forward FLOPs per second on ``device`` (measured once per process, cached)."""
    from .features import resolve_device

    dev = resolve_device(device)
    with _lock:
        return _measure(str(dev))


def training_flops(
    layer_flops: list[float],
    frozen: int,
    kept: int,
    head_flops: float,
    images: float,
    epochs: int,
    *,
    cached: bool,
    unfreeze_all_at: int | None = None,
) -> float:
    """Total FLOPs of a training run.

    ``layer_flops``: forward FLOPs per image of each body layer; the first
    ``frozen`` are frozen, the first ``kept`` are kept (the rest are cut).
    From epoch ``unfreeze_all_at`` every kept layer trains and the cache no
    longer applies.
    """
    kept_flops = layer_flops[:kept]
    frozen_f = sum(kept_flops[:frozen])
    trained_f = sum(kept_flops[frozen:])
    stage1 = epochs if unfreeze_all_at is None else min(unfreeze_all_at, epochs)
    stage2 = epochs - stage1
    train_step = (FORWARD + BACKWARD) * (trained_f + head_flops)
    if cached:
        per_image = frozen_f + stage1 * train_step  # the prefix runs once, to fill the cache
    else:
        per_image = stage1 * (FORWARD * frozen_f + train_step)
    per_image += stage2 * (FORWARD + BACKWARD) * (sum(kept_flops) + head_flops)
    return per_image * images
