"""Run the probe single-threaded: its products are small, and a second thread can cost 30x.

The probe's largest product is (256 x 257) x (257 x 256); most are (256 x 257)
x (257 x 10) and run in tens of microseconds. Split over threads they gain
little, and on a machine whose cores are busy with other work every parallel
region waits for a descheduled thread: on the shared 2-core development
machine (load average 4-5), 2 threads made ``cv_logistic`` 30x slower than 1
(1.3 -> 40 s wall for 10 folds x 9 strengths at 320 x 1280) and a (256, 256)
``eigh`` 10x slower.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def single_threaded() -> Iterator[None]:
    """``torch.set_num_threads(1)`` for the block, then the previous count again.

    The setting is torch's process-wide intra-op thread count: other torch work
    running at the same time in other Python threads runs single-threaded too.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
