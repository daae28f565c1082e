"""Figure 10: the CPU memory allocator, with and without ``runtime.tune_allocator``.

glibc reads its tuning once per process, so each side runs in its own fresh
interpreter: the same child script (``python -m bench.allocator --child``),
started alternately with ``TL_STUDIO_MALLOC_TUNING=0`` and ``=1`` (and,
for comparison, with glibc's own environment variables set before start).
The child trains a frozen-backbone EfficientNet-Lite0, uncached, batch 32,
through the engine, and reports images/s, minor page faults and system time
of its measured epochs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import time

from .common import ROOT, Row, median

log = logging.getLogger("bench.allocator")

VARIANTS = {
    # name: extra environment
    "off": {"TL_STUDIO_MALLOC_TUNING": "0"},
    "mallopt": {"TL_STUDIO_MALLOC_TUNING": "1"},
    "env": {"TL_STUDIO_MALLOC_TUNING": "0", "MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 30)},
}


def child(batch: int, steps: int, epochs: int) -> dict:
    """Runs in the fresh interpreter: the engine's uncached frozen-backbone loop."""
    import torch

    from tl_studio.plan import Plan
    from tl_studio.runtime import tune_allocator
    from tl_studio.train import TrainConfig

    from .common import engine_trainer, synthetic_data

    tuned = tune_allocator()  # what every entry point does first; honours TL_STUDIO_MALLOC_TUNING
    data = synthetic_data(batch * steps, 224)
    plan = Plan.head_only("efficientnet_lite0", len(data.classes))
    tr = engine_trainer(plan, TrainConfig(batch_size=batch, device="cpu", cache="off"), data, pretrained=True)
    tr.run_epoch()  # warm-up
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    seconds = sum(tr.run_epoch() for _ in range(epochs))
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    n = batch * steps * epochs
    return {
        "tuned": tuned,
        "images_per_second": n / seconds,
        "minor_faults": r1.ru_minflt - r0.ru_minflt,
        "system_seconds": r1.ru_stime - r0.ru_stime,
        "user_seconds": r1.ru_utime - r0.ru_utime,
        "images": n,
        "threads": torch.get_num_threads(),
    }


def run_child(variant: str, batch: int, steps: int, epochs: int, timeout: float = 300) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.update(VARIANTS[variant])
    cmd = [sys.executable, "-m", "bench.allocator", "--child", "--batch", str(batch), "--steps", str(steps),
           "--epochs", str(epochs)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"allocator child ({variant}) failed with exit {proc.returncode}:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def allocator_rows(*, batch: int, steps: int, epochs: int, repeats: int, with_env: bool = True) -> list[Row]:
    variants = ["off", "mallopt"] + (["env"] if with_env else [])
    got: dict[str, list[dict]] = {v: [] for v in variants}
    for r in range(repeats):
        order = variants if r % 2 == 0 else variants[::-1]
        for v in order:
            t = time.perf_counter()
            got[v].append(run_child(v, batch, steps, epochs))
            log.info("allocator %s: %.1f img/s, %d minor faults (%.0f s)", v, got[v][-1]["images_per_second"],
                     got[v][-1]["minor_faults"], time.perf_counter() - t)
    if not got["mallopt"][0]["tuned"]:
        note = "mallopt is not available here (not glibc): both sides ran untuned"
    else:
        note = ""

    def med(v, key):
        return median([d[key] for d in got[v]])

    off, on = med("off", "images_per_second"), med("mallopt", "images_per_second")
    per_pass = batch * steps * epochs
    detail = (
        f"tune_allocator {on:.1f} img/s, {med('mallopt', 'minor_faults'):,.0f} minor faults, "
        f"{med('mallopt', 'system_seconds'):.1f} s system vs untuned {off:.1f} img/s, "
        f"{med('off', 'minor_faults'):,.0f} faults, {med('off', 'system_seconds'):.1f} s system"
    )
    if with_env:
        detail += (f"; glibc env vars set before start: {med('env', 'images_per_second'):.1f} img/s, "
                   f"{med('env', 'minor_faults'):,.0f} faults")
    detail += f" (per {per_pass} images; separate interpreters, {repeats} each, alternating)"
    if note:
        detail += f"; {note}"
    return [Row(
        "10", "CPU allocator, img/s with tune_allocator / without (lite0 frozen, uncached, batch 32)", on / off,
        "ratio", "> 1, faults near 0", (on / off > 1.0) and med("mallopt", "minor_faults") < med("off", "minor_faults"),
        detail,
        limit="no page faults at all: every step reuses the heap's buffers instead of mmap/munmap per "
        "activation.",
        lever="tl_studio/runtime.py (`tune_allocator`, called by the CLI, launch.py and start_job).",
        extra={v: got[v] for v in variants},
    )]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", action="store_true", help="run one measurement in this interpreter (JSON out)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args()
    if a.child:
        logging.basicConfig(level=logging.WARNING)
        print(json.dumps(child(a.batch, a.steps, a.epochs)))
        return
    logging.basicConfig(level=logging.INFO)
    for r in allocator_rows(batch=a.batch, steps=a.steps, epochs=a.epochs, repeats=a.repeats):
        print(r.figure, r.name, f"{r.value:.3f}", r.detail)


if __name__ == "__main__":
    main()
