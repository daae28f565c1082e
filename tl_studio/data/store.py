"""Decoded, resized images as one uint8 tensor: each image is decoded once.

An epoch then costs a tensor index, never a JPEG decode. At uint8 and the
model's input size a 224x224 image takes 147 KiB, so 10,000 images fit in
1.4 GiB. Beyond the memory budget the store streams from disk with worker
processes instead (torch's DataLoader), decoding every image every epoch, and
says so in the log.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset
from ..preprocess import to_pixels
from .images import MAX_PIXELS, ImageRejected, load_rgb

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]


def preprocess_image(path: Path, preprocess, *, max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """One file as the model's uint8 input (3, S, S): upright RGB, shorter side resized, centre-cropped."""
    # JPEGs decode straight at a reduced scale that still covers resize_size
    img = load_rgb(Path(path), max_pixels=max_pixels, min_side=preprocess.resize_size)
    return to_pixels(img, preprocess)


def _decode_or_blank(path: Path, preprocess, max_pixels: int) -> tuple[torch.Tensor, str]:
    try:
        return preprocess_image(path, preprocess, max_pixels=max_pixels), ""
    except ImageRejected as exc:
        s = preprocess.input_size
        return torch.zeros(3, s, s, dtype=torch.uint8), str(exc)
    except OSError as exc:  # e.g. the file went away since the import
        s = preprocess.input_size
        return torch.zeros(3, s, s, dtype=torch.uint8), f"cannot read: {exc.strerror or exc}"


class _DecodeDataset(TorchDataset):
    """What each DataLoader worker process runs (picklable: paths and a frozen dataclass)."""

    def __init__(self, paths: list[Path], preprocess, max_pixels: int):
        self.paths, self.preprocess, self.max_pixels = paths, preprocess, max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        img, err = _decode_or_blank(self.paths[i], self.preprocess, self.max_pixels)
        return img, i, err


def _collate(batch):
    images = torch.stack([b[0] for b in batch])
    idx = torch.tensor([b[1] for b in batch], dtype=torch.long)
    return images, idx, [b[2] for b in batch]


class ImageStore:
    """The images of a dataset at the model's input size, as uint8 (N, 3, S, S)."""

    def __init__(
        self,
        paths: Sequence[str | Path],
        preprocess,
        *,
        memory_budget_bytes: int = 2 << 30,
        workers: int = 2,
        progress: Progress | None = None,
        max_pixels: int = MAX_PIXELS,
    ):
        self.paths = [Path(p) for p in paths]
        self.preprocess = preprocess
        self.size = int(preprocess.input_size)
        self.workers = max(0, int(workers))
        self.max_pixels = max_pixels
        self.errors: dict[int, str] = {}  # index -> why that image is blank
        self._decodes = 0
        self._lock = threading.Lock()
        need = len(self.paths) * 3 * self.size * self.size
        self.in_memory = need <= memory_budget_bytes
        self.tensor: torch.Tensor | None = None
        if self.in_memory:
            self.tensor = torch.empty((len(self.paths), 3, self.size, self.size), dtype=torch.uint8)
            self._fill(progress)
        else:
            log.warning(
                "%d images at %dx%d need %.0f MiB, more than the memory budget of %.0f MiB: "
                "streaming from disk with %d worker process(es); every epoch decodes every image again",
                len(self.paths), self.size, self.size, need / 2**20, memory_budget_bytes / 2**20, self.workers,
            )

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def decodes(self) -> int:
        """How many image decodes have happened so far."""
        return self._decodes

    def _count(self, n: int) -> None:
        with self._lock:
            self._decodes += n

    def _note(self, i: int, err: str) -> None:
        if err and i not in self.errors:
            self.errors[i] = err
            log.warning("%s: %s; using a blank image", self.paths[i], err)

    def _decode_many(self, indices: list[int], progress: Progress | None = None) -> list[torch.Tensor]:
        def one(i: int) -> torch.Tensor:
            img, err = _decode_or_blank(self.paths[i], self.preprocess, self.max_pixels)
            self._count(1)
            self._note(i, err)
            return img

        if len(indices) <= 1 or self.workers <= 1:
            out = []
            for n, i in enumerate(indices, 1):
                out.append(one(i))
                if progress is not None:
                    progress(n / len(indices), "decoding images")
            return out
        # PIL decodes and resizes with the GIL released: threads run in parallel
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="tl-decode") as pool:
            out = []
            for n, img in enumerate(pool.map(one, indices), 1):
                out.append(img)
                if progress is not None:
                    progress(n / len(indices), "decoding images")
            return out

    def _fill(self, progress: Progress | None) -> None:
        chunk = 256  # bounded number of decoded images in flight
        total = len(self.paths)
        for start in range(0, total, chunk):
            idx = list(range(start, min(start + chunk, total)))
            for i, img in zip(idx, self._decode_many(idx)):
                self.tensor[i] = img
            if progress is not None:
                progress(min(start + chunk, total) / total, "decoding images")

    def get(self, indices) -> torch.Tensor:
        """uint8 images (B, 3, S, S) on the CPU."""
        idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        if self.tensor is not None:
            return self.tensor.index_select(0, idx)
        imgs = self._decode_many(idx.tolist())
        if not imgs:
            return torch.empty((0, 3, self.size, self.size), dtype=torch.uint8)
        return torch.stack(imgs)

    def batches(
        self,
        indices,
        batch_size: int,
        *,
        shuffle: bool,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(uint8 images (B, 3, S, S), indices LongTensor)`` over ``indices``."""
        if batch_size < 1:
            raise ValueError(f"batch_size: must be at least 1, got {batch_size}")
        idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        if shuffle:
            idx = idx[torch.randperm(len(idx), generator=generator)]
        chunks = list(idx.split(batch_size))
        if drop_last and chunks and len(chunks[-1]) < batch_size:
            chunks.pop()
        if self.tensor is not None:
            for c in chunks:
                yield self.tensor.index_select(0, c), c
            return
        loader = DataLoader(
            _DecodeDataset(self.paths, self.preprocess, self.max_pixels),
            batch_sampler=[c.tolist() for c in chunks],
            num_workers=self.workers,
            collate_fn=_collate,
            # Worker seeds come from this generator, not the global RNG: streaming
            # must not shift a seeded training run's random stream (dropout etc.).
            generator=torch.Generator().manual_seed(0),
        )
        for images, got, errs in loader:
            self._count(len(got))
            for i, err in zip(got.tolist(), errs):
                self._note(i, err)
            yield images, got
