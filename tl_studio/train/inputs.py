"""What the network sees in training: batches from the feature cache, the device, or the disk.

For dataset indices, :class:`Inputs` gives the network's input (or output),
from the first of these that applies:

* the frozen-feature cache (cache.py): the frozen prefix's stored outputs,
  built once per phase when the prefix is frozen, nothing random passes
  through it (no augmentation) and the cache is on; in memory, or a
  memory-mapped file beyond what the memory budget leaves it;
* images held on the training device as uint8, decoded once: indexing,
  scaling, augmentation and normalisation are batched tensor ops there;
* images from the store's memory-mapped file, when the decoded images exceed
  the memory budget: the first pass decodes them in worker processes.

Frozen layers that are not cached run as a BatchNorm-folded inference copy
(extract.py) when ``fold_frozen`` is on.

Under torchrun (``dist``) the training forward goes through the DDP wrapper
(``ddp``, set on each phase by distributed.py), which averages the gradients
over the ranks, and each rank builds the cache for its share of the images,
then gathers the others'.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..memory import resolve_budget
from ..preprocess import Normalize, to_unit
from ..progress import DECODING, EXTRACTING, Meter, Progress
from ..registry import get_spec
from . import distributed
from .cache import FeatureCache
from ..features.fold import FrozenPrefix

log = logging.getLogger(__name__)


@dataclass
class TrainData:
    """What the loop needs from a dataset: decoded images, labels and the split."""

    images: object  # tl_studio.data.ImageStore (in memory: .tensor is uint8 N,3,S,S)
    labels: torch.Tensor  # (N,) int64
    train_idx: list[int]
    val_idx: list[int]
    classes: list[str]
    # provenance for config.json: fingerprint, root, (rel path, class) lists
    info: dict = field(default_factory=dict)
    # The frozen network's pooled features of every image (tl_studio.features), when a pass already
    # ran (the evidence pass); otherwise computed on demand into ``feature_store`` (None: the default).
    features: object = None
    feature_store: object = None
    # Where files beyond the memory budget go (the run's cache/ folder; None: next to the feature cache).
    spill_dir: Path | None = None


def data_from_dataset(
    dataset,
    model_name: str,
    *,
    memory_budget_mb: int | None = None,
    progress: Callable[[float, str], None] | None = None,
    publish: Callable[[Progress], None] | None = None,
    images=None,
    features=None,
    spill_dir: str | Path | None = None,
) -> TrainData:
    """A :class:`tl_studio.data.Dataset` decoded once for a model's input size (``images``: already decoded).

    ``progress(fraction, message)`` hears about the decoding, and so does
    ``publish`` as "decoding" :class:`~tl_studio.progress.Progress` events.
    ``features``: the frozen network's feature set of these images, when a pass already ran.
    ``memory_budget_mb`` (None: the default) and ``spill_dir``: see :class:`~tl_studio.data.ImageStore`.
    """
    if images is None:
        images = decode(dataset, model_name, memory_budget_mb=memory_budget_mb, progress=progress, publish=publish,
                        spill_dir=spill_dir)
    labels = torch.tensor(dataset.labels, dtype=torch.long)
    info = {"root": str(dataset.root), "fingerprint": dataset.fingerprint, **dataset.file_lists()}
    return TrainData(images, labels, list(dataset.train_idx), list(dataset.val_idx), list(dataset.classes), info,
                     features=features, spill_dir=Path(spill_dir) if spill_dir is not None else None)


def decode(
    dataset,
    model_name: str,
    *,
    memory_budget_mb: int | None = None,
    progress: Callable[[float, str], None] | None = None,
    publish: Callable[[Progress], None] | None = None,
    spill_dir: str | Path | None = None,
):
    """The dataset's images as an :class:`~tl_studio.data.ImageStore` at the model's input size."""
    from ..data import ImageStore

    listeners = [progress] if progress is not None else []
    if publish is not None:
        listeners.append(Meter(DECODING, len(dataset.paths), "images", publish).fractions())

    def tell(fraction: float, message: str) -> None:
        for listener in listeners:
            listener(fraction, message)

    return ImageStore(
        dataset.paths,
        get_spec(model_name).preprocess,
        memory_budget_bytes=resolve_budget(memory_budget_mb),
        progress=tell if listeners else None,
        spill_dir=spill_dir,
    )


class Inputs:
    """The network's input for dataset indices on the training device (see the module docstring)."""

    def __init__(
        self,
        data: TrainData,
        model_name: str,
        device: torch.device,
        *,
        augment,
        channels_last: bool,
        fold_frozen: bool,
        autocast: Callable,
        check_stop: Callable[[], None],
        publish: Callable[[Progress], None],
        dist: distributed.Dist | None = None,
    ):
        self.data = data
        self.dist = dist
        self.ddp = None  # under torchrun: the DDP wrapper the training forward runs through
        self.device = device
        self.augment = augment
        self.channels_last = channels_last
        self.fold_frozen = fold_frozen
        self._autocast = autocast
        self._check_stop = check_stop
        self._publish = publish
        self.normalize = Normalize(get_spec(model_name).preprocess).to(device)
        self.labels = data.labels.to(device)
        tensor = getattr(data.images, "tensor", None)  # None beyond the memory budget: a mapped file
        self.images = tensor.to(device) if tensor is not None else None
        self.model = None
        self.k = 0  # the frozen prefix: the first k body layers
        self.cache: FeatureCache | None = None
        self._fast: FrozenPrefix | None = None

    def set_prefix(self, model, k: int) -> None:
        """A new phase: the first ``k`` layers are frozen; the cache and folded copy are stale."""
        self.model, self.k = model, k
        self.cache = None
        self._fast = None

    def labels_of(self, idx: torch.Tensor) -> torch.Tensor:
        return self.labels[idx.to(self.labels.device)]

    # ---- batches -----------------------------------------------------------------------
    def batches(self, indices: torch.Tensor, bs: int):
        """(dataset indices, streamed uint8 images or None) in the given order.

        In memory (or from the cache) a batch is an index; beyond the memory
        budget the store reads its mapped file (decoding ahead in worker processes on the first pass).
        """
        if self.images is not None or self.cache is not None:
            for i in range(0, len(indices), bs):
                yield indices[i : i + bs], None
        else:
            for raw, idx in self.data.images.batches(indices.tolist(), bs, shuffle=False):
                yield idx, raw

    def tensor(self, idx: torch.Tensor, train: bool, raw: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised float input for dataset indices (augmented when training).

        ``raw`` is the uint8 batch when it was streamed from disk.
        """
        if raw is not None:
            x = raw.to(self.device, non_blocking=True)
        elif self.images is not None:
            x = self.images[idx.to(self.images.device)]
        else:
            x = self.data.images.get(idx.tolist()).to(self.device, non_blocking=True)
        x = to_unit(x)
        if train and not self.augment.is_identity:
            x = self.augment(x, generator=None)
        x = self.normalize.normalize_(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def forward(self, idx: torch.Tensor, train: bool, raw: torch.Tensor | None = None) -> torch.Tensor:
        """The model's output for dataset indices, through the cache or the folded prefix where they apply."""
        model = self.model
        ddp = self.ddp if train else None  # its forward is the model's, or its suffix with k given
        if self.cache is not None:
            h, feats = self.cache.get(idx)
            return ddp(h, feats, self.cache.k) if ddp else model.suffix(h, feats, self.cache.k)
        x = self.tensor(idx, train, raw)
        fast = self.fast_prefix()
        if fast is None:
            return ddp(x) if ddp else model(x)
        # Frozen layers are constants: run their folded copy, then the rest.
        h, feats = fast(x)
        return ddp(h, feats, fast.k) if ddp else model.suffix(h, feats, fast.k)

    # ---- the frozen prefix -----------------------------------------------------------------
    def fast_prefix(self) -> FrozenPrefix | None:
        """The folded inference copy of the current frozen prefix (None if nothing is frozen)."""
        if self.k == 0 or not self.fold_frozen:
            return None
        if self._fast is None or self._fast.k != self.k:
            self._fast = FrozenPrefix(
                self.model, self.k, self.device, channels_last=self.channels_last or self.device.type == "cpu"
            )
        return self._fast

    def build_cache(self, cfg, batch_size: int) -> None:
        """Build the feature cache for the current frozen prefix, if it applies and fits."""
        model, k = self.model, self.k
        if cfg.cache == "off" or k == 0 or not self.augment.is_identity:
            self.cache = None
            return
        if self.cache is not None and self.cache.k == k:
            return
        all_idx = torch.tensor(sorted(set(self.data.train_idx) | set(self.data.val_idx)))
        # Under torchrun each rank runs its shard, then gathers the rest (fewer images than ranks: all run all).
        shard = self.dist is not None and len(all_idx) >= self.dist.world_size
        mine = distributed.split_rows(all_idx, self.dist) if shard else all_idx
        bs = max(batch_size, 64)
        model.train()  # frozen stages are in eval mode either way
        meter = Meter(EXTRACTING, len(mine), "images", self._publish)

        def batches():
            done = 0
            for idx, raw in self.batches(mine, bs):
                self._check_stop()
                with self._autocast():
                    yield self.tensor(idx, train=False, raw=raw), idx
                done += len(idx)
                meter.update(done)

        self.cache = FeatureCache.build(
            model,
            k,
            batches(),
            run_prefix=self.fast_prefix(),
            n_images=len(all_idx),
            dtype=getattr(torch, cfg.cache_dtype),
            # One budget: what the decoded images hold in memory is not the cache's.
            budget_bytes=max(resolve_budget(cfg.memory_budget_mb) - getattr(self.data.images, "memory_bytes", 0), 0),
            device=self.device,
            spill_dir=self.data.spill_dir,
        )
        if shard:
            self.cache = distributed.gather_cache(self.dist, self.cache, all_idx, self.data.spill_dir)
