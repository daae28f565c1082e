"""Decoded, resized images as one uint8 tensor: each image is decoded once per run.

An epoch then costs a tensor index, never a JPEG decode. At uint8 and the
model's input size a 224x224 image takes 147 KiB, so 10,000 images take
1.4 GiB. Within the memory budget (tl_studio/memory.py) the store decodes
every image up front, in threads, into memory. Beyond it the tensor is a
memory-mapped file (the run's ``cache/`` folder, else a temporary one next
to the feature cache) that fills as the first pass goes: a pool of threads
decodes the images of the coming batches while the model computes, they are
written into the file, and every later pass reads the file (the page cache
keeps what fits in memory). One INFO line says which.
"""

from __future__ import annotations

import collections
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch

from ..memory import human, mapped_tensor, resolve_budget
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


class ImageStore:
    """The images of a dataset at the model's input size, as uint8 (N, 3, S, S).

    ``memory_budget_bytes``: None for the default (:func:`tl_studio.memory.default_budget`).
    ``spill_dir``: where the memory-mapped file goes beyond the budget (None: next to the feature cache).
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        preprocess,
        *,
        memory_budget_bytes: int | None = None,
        workers: int = 2,
        progress: Progress | None = None,
        max_pixels: int = MAX_PIXELS,
        spill_dir: str | Path | None = None,
    ):
        self.paths = [Path(p) for p in paths]
        self.preprocess = preprocess
        self.size = int(preprocess.input_size)
        self.workers = max(0, int(workers))
        self.max_pixels = max_pixels
        self.errors: dict[int, str] = {}  # index -> why that image is blank
        self._decodes = 0
        self._lock = threading.Lock()
        n, s = len(self.paths), self.size
        need = n * 3 * s * s
        budget = resolve_budget(None) if memory_budget_bytes is None else int(memory_budget_bytes)
        self.budget = budget
        self.in_memory = need <= budget
        self.tensor: torch.Tensor | None = None  # in memory only: the whole store, filled
        self._map: torch.Tensor | None = None  # beyond the budget: the mapped file, filled as images come
        self._ready: torch.Tensor | None = None  # which rows of the map hold their image
        self.spill_path: Path | None = None
        what = f"decoded images: {human(need)} ({n:,} at {s}x{s})"
        if self.in_memory:
            log.info("%s within the memory budget of %s: in memory", what, human(budget))
            self.tensor = torch.empty((n, 3, s, s), dtype=torch.uint8)
            self._fill(progress)
            return
        self._map, self.spill_path = mapped_tensor(spill_dir, "images.u8", (n, 3, s, s), torch.uint8,
                                                   "the decoded images")
        self._ready = torch.zeros(n, dtype=torch.bool)
        log.info("%s > memory budget %s: memory-mapped at %s (each image decoded once, by %d thread(s) "
                 "while the model computes; the file is unlinked, its space returns when the run ends)",
                 what, human(budget), self.spill_path, max(1, self.workers))

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def mapped(self) -> bool:
        """Whether the images live in a memory-mapped file (beyond the memory budget)."""
        return self._map is not None

    @property
    def memory_bytes(self) -> int:
        """Anonymous memory the store holds: its share of the budget (a mapped file holds none)."""
        return self.tensor.nbytes if self.tensor is not None else 0

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

    def _store(self, idx: torch.Tensor, images: torch.Tensor) -> None:
        """Rows decoded for the map: written once, never decoded again."""
        self._map[idx] = images
        self._ready[idx] = True

    def get(self, indices) -> torch.Tensor:
        """uint8 images (B, 3, S, S) on the CPU."""
        idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        if self.tensor is not None:
            return self.tensor.index_select(0, idx)
        todo = idx[~self._ready[idx]].unique()
        if len(todo):
            self._store(todo, torch.stack(self._decode_many(todo.tolist())))
        return self._map.index_select(0, idx)

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
        # The rows not decoded yet (the first pass) are decoded by a pool of threads a few batches ahead of
        # the one the model is on; everything else is read from the map.
        todo = [c[~self._ready[c]] for c in chunks]
        loaded = self._ahead([t for t in todo if len(t)])
        for c, t in zip(chunks, todo):
            if len(t):
                images, got = next(loaded)
                self._store(got, images)
                if len(t) == len(c):
                    yield images, c
                    continue
            yield self._map.index_select(0, c), c

    def _ahead(self, batches: list[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(uint8 images, indices)`` for each batch in order, decoded by threads up to 2 per thread ahead.

        Threads, not DataLoader worker processes: PIL decodes and resizes with the GIL released, so they
        run in parallel with the model's own computation as well as processes would, and a forked worker
        would hold its own copy of every page of the parent's it touches (a few hundred MiB each).
        """
        if not batches:
            return
        workers = max(1, self.workers)

        def decode(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            images = torch.empty((len(batch), 3, self.size, self.size), dtype=torch.uint8)
            for row, i in enumerate(batch.tolist()):
                img, err = _decode_or_blank(self.paths[i], self.preprocess, self.max_pixels)
                images[row] = img
                self._note(i, err)
            self._count(len(batch))
            return images, batch

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tl-decode") as pool:
            pending = collections.deque()
            queue = iter(batches)
            try:
                for batch in queue:
                    pending.append(pool.submit(decode, batch))
                    if len(pending) >= 2 * workers:
                        break
                while pending:
                    done = pending.popleft().result()
                    nxt = next(queue, None)
                    if nxt is not None:
                        pending.append(pool.submit(decode, nxt))
                    yield done
            finally:  # a consumer that stops early (a stop, an error) leaves nothing decoding
                for f in pending:
                    f.cancel()
