"""The frozen-feature cache: run the frozen prefix once per image, not once per epoch.

When the first k layers are frozen they run in inference mode (surgery.py),
so they are a deterministic function of the image; if no random
augmentation has to pass through them, their output for each image is the
same every epoch. We compute it once and train only the remaining layers on
the stored activations. With fp32 storage the training is the same
computation as without the cache (a test checks it within float tolerance);
fp16 storage halves the memory at a cost recorded in ``DTYPE_TOLERANCE``.

Beyond its share of the memory budget (tl_studio/memory.py: the budget less
what the decoded images hold) the cache is a memory-mapped file on the CPU
instead, read a batch at a time: the same values, at disk speed where the
page cache cannot keep them.
"""

from __future__ import annotations

import logging
import math

import torch

from ..memory import human, mapped_tensor, spill_root
from ..surgery import TransferModel

log = logging.getLogger(__name__)

# Bound on the relative difference of per-step training losses between a run
# on the cache and the same seeded run without it, by storage dtype. Measured
# on the demo dataset with EfficientNet-Lite0, 2 epochs of batch 8:
# * float32: identical (0.0): cached and live runs share the folded prefix;
# * float16: 2.6e-5 storing pooled features (head-only), 3.4e-3 storing the
#   112x14x14 activation after blocks.10 (head weights then differ by 8.7e-3).
DTYPE_TOLERANCE = {"float32": 1e-5, "float16": 1e-2}


def bytes_per_image(model: TransferModel, k: int, dtype: torch.dtype) -> int:
    """Storage one image's prefix output needs, from the model's layout."""
    lay, names = model.layout, model.layer_names
    item = torch.empty((), dtype=dtype).element_size()
    if k == len(names):
        return model.feature_dim * item
    boundary = math.prod(lay.layer(names[k - 1]).output_shape)
    taps = lay.width([names[i] for i in model.taps if i < k])
    return (boundary + taps) * item


class FeatureCache:
    """Stored outputs of ``model.prefix(x, k)`` for a set of images."""

    def __init__(self, k: int, positions: dict[int, int], h: torch.Tensor, feats: list[torch.Tensor],
                 *, device: torch.device | None = None, mapped: bool = False):
        self.k = k
        self._pos = positions  # dataset index -> row in the stored tensors
        self.h = h
        self.feats = feats
        self._lookup = None
        self.mapped = mapped  # a memory-mapped file on the CPU, read a batch at a time
        self.device = torch.device(device) if device is not None else h.device  # where batches go

    @property
    def nbytes(self) -> int:
        return self.h.nbytes + sum(f.nbytes for f in self.feats)

    def rows(self, indices: torch.Tensor) -> torch.Tensor:
        """Rows for dataset indices (a device tensor lookup, no Python loop per batch)."""
        if self._lookup is None:
            size = max(self._pos) + 1
            lookup = torch.full((size,), -1, dtype=torch.long)
            for idx, row in self._pos.items():
                lookup[idx] = row
            self._lookup = lookup.to(self.h.device)
        return self._lookup[indices.to(self.h.device)]

    def get(self, indices: torch.Tensor):
        r = self.rows(indices)
        if self.mapped:
            return (self.h[r].to(self.device).float(), [f[r].to(self.device).float() for f in self.feats])
        return self.h[r].float(), [f[r].float() for f in self.feats]

    @classmethod
    def build(
        cls,
        model: TransferModel,
        k: int,
        batches,
        *,
        run_prefix=None,
        n_images: int,
        dtype: torch.dtype,
        budget_bytes: int,
        device: torch.device,
        spill_dir=None,
    ) -> "FeatureCache":
        """Run the prefix over ``batches`` (an iterable of (input tensor, dataset indices)).

        ``run_prefix(x) -> (h, feats)`` computes the prefix (default
        ``model.prefix(x, k)``; the trainer passes its folded fast copy).
        Beyond ``budget_bytes`` the cache is a memory-mapped file in
        ``spill_dir`` (None: next to the feature cache), on the CPU.
        """
        run_prefix = run_prefix or (lambda x: model.prefix(x, k))
        need = bytes_per_image(model, k, dtype) * n_images
        mapped = need > budget_bytes
        where = "memory-mapped" if mapped else "in memory"
        h = feats = None
        positions, row = {}, 0
        for x, idx in batches:
            out_h, out_f = run_prefix(x)
            if h is None:  # shapes are known from the first batch: allocate every row once
                # the layout the prefix gives (the folded copy's is channels_last), or the input's: the
                # suffix then computes on the same strides as without the cache
                last = any(t.is_contiguous(memory_format=torch.channels_last) for t in (x, out_h))
                layout = torch.channels_last if out_h.dim() == 4 and last else torch.contiguous_format
                h = _allocate((n_images, *out_h.shape[1:]), dtype, device, mapped, spill_dir, layout)
                feats = [_allocate((n_images, *f.shape[1:]), dtype, device, mapped, spill_dir) for f in out_f]
                if mapped:
                    where = f"memory-mapped in {spill_dir or spill_root()} (read a batch at a time)"
            n = len(idx)
            h[row:row + n] = out_h.to(dtype=dtype)
            for dst, f in zip(feats, out_f):
                dst[row:row + n] = f.to(dtype=dtype)
            for i in idx.tolist():
                positions[i] = row
                row += 1
        if h is None:
            raise ValueError("feature cache: no images")
        log.info("feature cache: %d images after layer %d, %s (%s) %s budget %s: %s", row, k, human(need), dtype,
                 ">" if mapped else "within", human(budget_bytes), where)
        return cls(k, positions, h[:row], [f[:row] for f in feats], device=device, mapped=mapped)


def allocate_like(t: torch.Tensor, n: int, spill_dir) -> torch.Tensor:
    """A memory-mapped tensor of ``n`` rows shaped and laid out like ``t``'s (a gathered cache's)."""
    last = t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)
    return _allocate((n, *t.shape[1:]), t.dtype, t.device, True, spill_dir,
                     torch.channels_last if last else torch.contiguous_format)


def _allocate(shape, dtype, device, mapped: bool, spill_dir, layout=torch.contiguous_format) -> torch.Tensor:
    if not mapped:
        return torch.empty(shape, dtype=dtype, device=device, memory_format=layout)
    if layout is torch.channels_last:  # (N, H, W, C) on disk, seen as (N, C, H, W)
        n, c, hh, ww = shape
        t, _ = mapped_tensor(spill_dir, "features.bin", (n, hh, ww, c), dtype, "the feature cache")
        return t.permute(0, 3, 1, 2)
    t, _ = mapped_tensor(spill_dir, "features.bin", tuple(shape), dtype, "the feature cache")
    return t
