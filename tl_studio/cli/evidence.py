"""The evidence pass from the command line: its estimated cost first, progress on stderr, Ctrl-C stops it.

``recommend --data`` and ``train --plan auto`` both run it through
:func:`tl_studio.strategy.on_dataset.recommend_for_data`, so they give the same plan.
"""

from __future__ import annotations

import logging
import time

from .progress import ProgressView

log = logging.getLogger(__name__)


def recommendation(args, dataset, device, store=None, share=None):
    """The measured recommendation for ``dataset`` (args: model, seed, no_evidence, random_weights)."""
    from ..strategy.evidence import estimate_seconds, scope
    from ..strategy.on_dataset import recommend_for_data

    evidence = not getattr(args, "no_evidence", False)
    if evidence and getattr(args, "weights", None):
        # The cached passes are of the registry's weights; a local file is another network.
        log.info("--weights: no evidence pass (it measures the registry's weights); the four cases decide")
        evidence = False
    if evidence:
        images, probed, words = scope(dataset)
        seconds = estimate_seconds(args.model, images, probed, device)
        log.info("evidence pass: %s over %s; about %.0f s (less when cached; Ctrl-C stops it, --no-evidence "
                 "skips it)", args.model, words, seconds)
    started = time.perf_counter()
    with ProgressView() as view:
        images = None
        if evidence:  # decoded within the memory budget, and reused by the training after it
            from ..train.inputs import decode

            images = decode(dataset, args.model, memory_budget_mb=getattr(args, "memory_budget", None),
                            spill_dir=getattr(args, "spill_dir", None), publish=view)
        measured = recommend_for_data(args.model, dataset, images=images, evidence=evidence, seed=args.seed,
                                      device=device, pretrained=not getattr(args, "random_weights", False),
                                      publish=view, store=store, share=share)
    if evidence and measured.evidence is not None:
        fs, ev = measured.features, measured.evidence
        log.info("evidence phase: %.1f s; the frozen pass over %d images %.1f s (%s; training reuses it), the "
                 "probes %.1f s (%.1f s with decoding)", fs.seconds + ev.seconds, fs.rows, fs.seconds,
                 "computed" if fs.seconds else "from the cache", ev.seconds, time.perf_counter() - started)
    return measured
