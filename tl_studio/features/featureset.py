"""What one pass of the frozen pretrained network says about every image of a dataset.

A :class:`FeatureSet` holds, for every image of one dataset (in the dataset's
item order), the globally pooled output of every body layer of one model
with one set of weights and one preprocessing, the ImageNet head's logits,
and how far the images' BatchNorm-input statistics lie from ImageNet's.
The similarity measure, the probe curve of the evidence pass, the convex
head and the trainer's feature cache all read it: the network runs over the
images once per (model, weights, preprocessing, data), not once per use.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import torch

from ..registry import get_spec

# Bump when what is stored, or how it is computed, changes: old cache files then miss.
FORMAT = 1


def feature_key(model_name: str, fingerprint: str, *, pretrained: bool = True) -> str:
    """The cache key: model, weights, preprocessing and the data's fingerprint (sha256 hex).

    Other weights, another preprocessing or other images give another key
    (a miss); the split does not enter it (features do not depend on labels
    or on which images train).
    """
    spec = get_spec(model_name)
    weights = (f"{spec.weights_name}|{spec.weights_url or 'embedded'}|{spec.revision or ''}" if pretrained
               else "random-init")
    what = {
        "format": FORMAT,
        "model": model_name,
        "weights": weights,
        "preprocess": spec.preprocess.to_dict(),
        "data": fingerprint,
    }
    text = json.dumps(what, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(eq=False)
class FeatureSet:
    key: str
    model: str
    fingerprint: str
    layers: tuple[str, ...]  # body layers in network order
    pooled: dict[str, torch.Tensor]  # layer -> (N, width) pooled outputs, float32 or float16, on the CPU
    logits: torch.Tensor  # (N, classes) of the pretrained head, float32
    # Per BatchNorm layer (network order): mean per-channel KL between the sampled
    # images' input statistics and the stored ImageNet ones; empty without BatchNorm.
    bn_kl: tuple[float, ...] = ()
    bn_rows: int = 0  # images the BatchNorm statistics were measured on
    seconds: float = 0.0  # the pass's wall time (0 when loaded from a cache)
    meta: dict = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return int(self.logits.shape[0])

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.pooled.values()) + self.logits.nbytes

    def width(self, layer: str) -> int:
        return int(self.pooled[layer].shape[1])

    @property
    def penultimate(self) -> torch.Tensor:
        """The pretrained classifier's input: the last body layer's pooled output."""
        return self.pooled[self.layers[-1]]

    def x(self, layers, rows=None) -> torch.Tensor:
        """float32 (len(rows), sum of widths): the layers' pooled outputs side by side, in the order given.

        This is exactly what a head that taps ``layers`` (or reads the last
        kept layer, when ``layers`` is that one name) receives.
        """
        if isinstance(layers, str):
            layers = [layers]
        unknown = [n for n in layers if n not in self.pooled]
        if unknown:
            raise KeyError(f"no stored features for layer(s) {', '.join(unknown)} of {self.model}")
        idx = None if rows is None else torch.as_tensor(rows, dtype=torch.long)
        parts = [(self.pooled[n] if idx is None else self.pooled[n].index_select(0, idx)).float() for n in layers]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
