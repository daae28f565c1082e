"""The one pass: every body layer's pooled output, the ImageNet logits and BatchNorm statistics.

The network runs as the trainer's frozen prefix does (a BatchNorm-folded,
channels_last inference copy: fold.py) with every body layer tapped, so one
forward gives all depths at once. BatchNorm input statistics need the
unfolded layers, so a small, evenly spread sample of the images (at most
:data:`BN_SAMPLE`) runs through the unfolded network with hooks instead:
its pooled outputs are used like the others' (they agree to float rounding).
The sample is chosen by position only, never by label or split, so the
stored features depend on the images alone.

With ``known`` rows (the evidence's sample of the training images, already
passed), only the other images run: the known rows' features and BatchNorm
statistics are taken as they are, so a pass over every image after the
sample's costs one pass in all.

Under torchrun a ``share`` splits the pass: every rank runs the BatchNorm
sample (so every rank has the statistics), its own shard of the other images,
and gathers the other ranks' rows (train/distributed.py).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from typing import Callable

import torch
from torch import nn

from .. import devices
from ..layout import layout
from ..plan import Plan
from ..progress import EXTRACTING, Meter, Progress
from ..registry import get_spec
from ..surgery import TransferModel
from .base import BNStats, base_model, normaliser, pass_lock
from .featureset import FeatureSet, feature_key
from .fold import FrozenPrefix

log = logging.getLogger(__name__)

# Images whose BatchNorm-input statistics are measured: enough for stable
# per-channel moments (the similarity's anchors were measured on 256).
BN_SAMPLE = 256
# Above this many bytes of float32 features, store float16 (half the memory;
# pooled features lose nothing a probe or a linear head can see).
FLOAT32_BUDGET = 512 * 2**20
_lock = threading.Lock()


def bn_sample(n: int, limit: int = BN_SAMPLE) -> list[int]:
    """At most ``limit`` of ``range(n)``, evenly spread (by position: no label, no split)."""
    if n <= limit:
        return list(range(n))
    step = n / limit
    return sorted({int(i * step) for i in range(limit)})


@functools.lru_cache(maxsize=2)
def _tapped(model_name: str, pretrained: bool, device: str) -> tuple[TransferModel, FrozenPrefix]:
    """The base network with every body layer tapped, and its folded inference copy (built once)."""
    names = list(layout(model_name).names)
    base = base_model(model_name, pretrained, torch.device(device))
    model = TransferModel(Plan.head_only(model_name, 2, taps=names), base).eval()
    return model, FrozenPrefix(model, len(names), torch.device(device), channels_last=True)


def extract(
    model_name: str,
    images,
    fingerprint: str,
    *,
    device: str | torch.device | None = None,
    pretrained: bool = True,
    batch_size: int = 64,
    publish: Callable[[Progress], None] | None = None,
    check_stop: Callable[[], None] | None = None,
    share=None,
    known: tuple[list[int], FeatureSet] | None = None,
) -> FeatureSet:
    """Run the frozen network once over ``images`` (an :class:`~tl_studio.data.ImageStore`: ``len`` and
    ``batches(indices, batch_size, shuffle=False)`` of uint8 images at the model's input size).

    ``known``: (rows, their feature set) of images passed already, with this model and weights."""
    dev = devices.resolve(device)
    lay = layout(model_name)
    names = list(lay.names)
    widths = [lay.layer(n).pooled_width for n in names]
    n = len(images)
    if n == 0:
        raise ValueError("images: no images to extract features from")
    with _lock:
        model, fast = _tapped(model_name, pretrained, str(dev))
    norm = normaliser(model_name, dev)
    dtype = torch.float32 if n * sum(widths) * 4 <= FLOAT32_BUDGET else torch.float16
    out = torch.empty((n, sum(widths)), dtype=dtype)
    stats = [BNStats(m) for m in model.body.modules()  # the shared base network's body
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None]
    known_rows, known_fs = known if known is not None else ([], None)
    if known_fs is not None:
        if known_fs.model != model_name or list(known_fs.layers) != names or known_fs.rows != len(known_rows):
            raise ValueError(f"known features: not {len(known_rows)} rows of {model_name}'s layers")
        out[torch.as_tensor(known_rows, dtype=torch.long)] = known_fs.x(names).to(dtype)
        sample = []  # the BatchNorm statistics come with the known rows
    else:
        sample = bn_sample(n) if stats else []
    rest = sorted(set(range(n)) - set(sample) - set(known_rows))
    mine = share.mine(rest) if share is not None else rest  # under torchrun: this rank's shard
    meter = Meter(EXTRACTING, len(sample) + len(mine), "images", publish or (lambda p: None))
    started, done = time.perf_counter(), 0

    def run(indices: list[int], forward) -> None:
        nonlocal done
        if not indices:
            return
        for raw, idx in images.batches(indices, batch_size, shuffle=False):
            if check_stop is not None:
                check_stop()
            h, _ = forward(norm(raw))
            out[idx] = h.to(dtype=dtype, device="cpu")
            done += len(idx)
            meter.update(done)

    with torch.inference_mode():
        if sample:
            with pass_lock:  # the hooks sit on the shared base network
                hooks = [s.bn.register_forward_pre_hook(s) for s in stats]
                try:
                    run(sample, model.prefix)
                finally:
                    for h in hooks:
                        h.remove()
        run(mine, fast)
        if share is not None:
            share.gather(out, rest)
        classifier = next(s.module for s in get_spec(model_name).stages(base_model(model_name, pretrained, dev))
                          if s.role == "classifier")
        penultimate = out[:, sum(widths[:-1]):]
        logits = torch.cat([classifier(penultimate[i:i + 1024].to(dev).float()).float().cpu()
                            for i in range(0, n, 1024)])
    pooled, at = {}, 0
    for name, w in zip(names, widths):
        pooled[name] = out[:, at:at + w]
        at += w
    seconds = time.perf_counter() - started
    ran = n - len(known_rows)
    log.info("features: %d images through %s (%d layers, %.1f MB, %s) in %.1f s (%.0f images/s)%s",
             ran, model_name, len(names), out.nbytes / 2**20, str(dtype).removeprefix("torch."), seconds,
             ran / seconds, f"; {len(known_rows)} more from the evidence's sample" if known_rows else "")
    return FeatureSet(
        key=feature_key(model_name, fingerprint, pretrained=pretrained),
        model=model_name,
        fingerprint=fingerprint,
        layers=tuple(names),
        pooled=pooled,
        logits=logits,
        bn_kl=known_fs.bn_kl if known_fs is not None else tuple(s.kl_to_running() for s in stats) if sample else (),
        bn_rows=known_fs.bn_rows if known_fs is not None else len(sample),
        seconds=seconds,
    )
