"""The evidence pass from the command line: its estimated cost first, progress on stderr, Ctrl-C stops it.

``recommend --data`` and ``train --plan auto`` both run it through
:func:`tl_studio.strategy.on_dataset.recommend_for_data`, so they give the same plan.
"""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger(__name__)


class EventLines:
    """Progress events as one updating line on a terminal, a line every few seconds otherwise."""

    def __init__(self, stream=None, every: float = 3.0):
        # Looked up now, not at import: the stream may have been replaced since (pytest, a redirect).
        self.stream, self.every = stream or sys.stderr or sys.__stderr__, every
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.last = 0.0
        self.pending = None

    def __call__(self, event) -> None:
        eta = f", about {event.eta:.0f} s left" if event.eta is not None else ""
        rate = f" at {event.rate:.0f} {event.unit}/s" if event.rate else ""
        text = f"{event.phase}: {event.done}/{event.total} {event.unit}{rate}{eta}"
        now = time.monotonic()
        if self.tty:
            self.stream.write(f"\r{text}\033[K")
            self.stream.flush()
        elif now - self.last >= self.every or event.done >= event.total:
            self.stream.write(text + "\n")
            self.stream.flush()
            self.last = now

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def recommendation(args, dataset, device):
    """The measured recommendation for ``dataset`` (args: model, seed, no_evidence, random_weights)."""
    from ..strategy.evidence import estimate_seconds
    from ..strategy.on_dataset import recommend_for_data

    evidence = not getattr(args, "no_evidence", False)
    if evidence:
        seconds = estimate_seconds(args.model, len(dataset.paths), len(dataset.train_idx), device)
        log.info("evidence pass: %s over %d images once, then probes on the %d training images; about %.0f s "
                 "(less when cached; Ctrl-C stops it, --no-evidence skips it)", args.model, len(dataset.paths),
                 len(dataset.train_idx), seconds)
    lines = EventLines()
    started = time.perf_counter()
    try:
        measured = recommend_for_data(args.model, dataset, evidence=evidence, seed=args.seed, device=device,
                                      pretrained=not getattr(args, "random_weights", False), publish=lines)
    finally:
        lines.close()
    if evidence:
        log.info("evidence pass: %.1f s", time.perf_counter() - started)
    return measured
