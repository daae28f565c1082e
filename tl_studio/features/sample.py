"""Which training images the evidence pass reads: all of them on small data, a stratified sample past it.

Up to :data:`PER_CLASS` training images per class (on average) the default
plan trains no body layer, and the evidence pass is the one frozen pass the
run needs anyway: it covers every image, and the fitted head, the
validation score and the training cache all reuse it. Past that bound the
plan trains body layers: training runs the network itself, so a pass over
every image would be a cost of its own, as large as a ``--plan head`` run.
There the evidence reads a stratified sample of the training images: half of
each class, at most :data:`PER_CLASS` (at least :data:`MIN_PER_CLASS`, or the
whole class when smaller). Its own pass then costs at most half of one pass
over the training images, and no more than the small-data case however large
the data grows (its memory too). What the evidence decides there (the cut,
the taps, the starting head) is a choice among a few candidates, which a
hundred images per class measure to a few points of accuracy.

The sample depends on the labels and the training split only (a fixed seed):
the command line, the app and the trainer, given the same split, read the
same rows, so the trainer's starting head is the one the evidence fitted.
"""

from __future__ import annotations

import hashlib

import torch

# The four cases' small-data bound (tl_studio.strategy.rules.SMALL_DATA; a test keeps them equal).
PER_CLASS = 100
# Enough rows of a class for every one of the evidence's 5 folds to hold one out.
MIN_PER_CLASS = 10
SEED = 0


def evidence_rows(labels, train_idx) -> list[int] | None:
    """The training rows the evidence reads (sorted dataset indices), or None: every image (small data)."""
    rows = torch.as_tensor(sorted(train_idx), dtype=torch.long)
    y = torch.as_tensor(labels, dtype=torch.long)[rows]
    classes = torch.unique(y)
    if len(rows) <= PER_CLASS * max(len(classes), 1):
        return None
    gen = torch.Generator().manual_seed(SEED)
    picked = []
    for c in classes:
        members = rows[y == c]
        n = members.numel()
        take = min(n, max(MIN_PER_CLASS, min(PER_CLASS, (n + 1) // 2)))
        picked.append(members[torch.randperm(n, generator=gen)[:take]])
    return sorted(torch.cat(picked).tolist())


def sample_fingerprint(fingerprint: str, rows: list[int]) -> str:
    """The fingerprint of the sample ``rows`` of the data with ``fingerprint``: other data, another key."""
    text = fingerprint + "|sample|" + ",".join(map(str, rows))
    return hashlib.sha256(text.encode("ascii")).hexdigest()


class Rows:
    """The images ``rows`` of an ImageStore, as an image store of their own (row i is ``rows[i]``)."""

    def __init__(self, images, rows: list[int]):
        self.images, self.rows = images, torch.as_tensor(rows, dtype=torch.long)

    def __len__(self) -> int:
        return int(self.rows.numel())

    def batches(self, indices, batch_size: int, *, shuffle: bool = False):
        """``(uint8 images, indices)`` over ``indices`` of this view, in order (what the frozen pass asks)."""
        if shuffle:
            raise ValueError("Rows.batches: the frozen pass reads in order")
        local = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        at = 0
        for raw, got in self.images.batches(self.rows[local], batch_size, shuffle=False):
            yield raw, local[at:at + len(got)]
            at += len(got)
