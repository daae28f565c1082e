"""The frozen-feature cache: run the frozen prefix once per image, not once per epoch.

When the first k layers are frozen they run in inference mode (surgery.py),
so they are a deterministic function of the image; if no random
augmentation has to pass through them, their output for each image is the
same every epoch. We compute it once and train only the remaining layers on
the stored activations. With fp32 storage the training is the same
computation as without the cache (a test checks it within float tolerance);
fp16 storage halves the memory at a cost recorded in ``DTYPE_TOLERANCE``.
"""

from __future__ import annotations

import logging
import math

import torch

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

    def __init__(self, k: int, positions: dict[int, int], h: torch.Tensor, feats: list[torch.Tensor]):
        self.k = k
        self._pos = positions  # dataset index -> row in the stored tensors
        self.h = h
        self.feats = feats
        self._lookup = None

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
    ) -> "FeatureCache | None":
        """Run the prefix over ``batches`` (an iterable of (input tensor, dataset indices)).

        ``run_prefix(x) -> (h, feats)`` computes the prefix (default
        ``model.prefix(x, k)``; the trainer passes its folded fast copy).
        Returns None (and says why) when the cache would not fit its budget.
        """
        run_prefix = run_prefix or (lambda x: model.prefix(x, k))
        need = bytes_per_image(model, k, dtype) * n_images
        if need > budget_bytes:
            log.warning(
                "feature cache needs %.0f MB (> budget %.0f MB): training without it",
                need / 2**20,
                budget_bytes / 2**20,
            )
            return None
        hs, fs, positions = [], [], {}
        row = 0
        for x, idx in batches:
            h, feats = run_prefix(x)
            hs.append(h.to(device=device, dtype=dtype))
            fs.append([f.to(device=device, dtype=dtype) for f in feats])
            for i in idx.tolist():
                positions[i] = row
                row += 1
        h = torch.cat(hs)
        feats = [torch.cat([f[j] for f in fs]) for j in range(len(fs[0]))] if fs and fs[0] else []
        if h.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
            h = h.contiguous(memory_format=torch.channels_last)
        log.info("feature cache: %d images after layer %d, %.1f MB (%s)", row, k, need / 2**20, dtype)
        return cls(k, positions, h, feats)
