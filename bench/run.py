"""Run the CPU benchmark suite: ``python -m bench`` (or ``python bench/run.py``).

Prints one table of ratios, each measured side by side in this one run, and
writes it to ``bench/results/cpu.md`` and ``cpu.csv``. A figure that fails
is reported as failed with its error, and the rest still run. The GPU figure
(9) is a separate script, ``python bench/gpu.py``, for a GPU machine.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import traceback
from pathlib import Path

if __package__ in (None, ""):  # run as a script: python bench/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

log = logging.getLogger("bench")

FIGURES = ("1", "2", "3", "4", "5", "6", "7", "8", "10", "11", "12")


def _failed(figure: str, name: str, exc: BaseException):
    from bench.common import Row

    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return Row(figure, name, None, "", "-", False, f"FAILED: {type(exc).__name__}: {first}"[:300])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="TL Studio CPU benchmarks: ratios measured side by side.")
    p.add_argument("--only", default=",".join(FIGURES),
                   help=f"comma-separated figures to run (default: all of {','.join(FIGURES)})")
    p.add_argument("--repeats", type=int, default=3, help="alternations per side for in-process ratios")
    p.add_argument("--out", default=None, help="results folder (default bench/results)")
    p.add_argument("--stem", default="cpu", help="results file name without extension")
    p.add_argument("--bf16-probe", action="store_true",
                   help="figure 8: run the (emulated, slow) bf16 probe even on a CPU without native bf16")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "gradio_client", "tl_studio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    only = {f.strip() for f in args.only.split(",") if f.strip()}
    unknown = only - set(FIGURES)
    if unknown:
        p.error(f"--only: unknown figure(s) {', '.join(sorted(unknown))}; known: {', '.join(FIGURES)} "
                "(9, the GPU figure, is python bench/gpu.py)")

    import os

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from tl_studio.runtime import tune_allocator

    # As every entry point does (CLI, launch.py, start_job): both sides of every
    # in-process ratio run with the allocator the app runs with.
    tune_allocator()

    from bench.common import RESULTS, console_table, demo_data, machine, write_results

    R = args.repeats
    t_start = time.perf_counter()
    rows = []
    real = None

    def demo():
        nonlocal real
        if real is None:
            real = demo_data("efficientnet_lite0")
        return real

    def step(figure: str, name: str, fn):
        if figure not in only:
            return
        t = time.perf_counter()
        log.info("figure %s: %s ...", figure, name)
        try:
            got = fn()
        except Exception as exc:  # one figure failing never stops the others
            log.error("figure %s failed:\n%s", figure, traceback.format_exc())
            got = [_failed(figure, name, exc)]
        got = got if isinstance(got, list) else [got]
        for r in got:
            log.info("  %s %s: %s (%s)", r.figure, r.name, r.value, r.detail)
        rows.extend(got)
        log.info("figure %s took %.0f s", figure, time.perf_counter() - t)

    from bench import loop_figures as L

    step("1", "loop efficiency", lambda: [
        L.loop_efficiency("efficientnet_lite0", size=128, batch=32, steps=2, repeats=R + 2, figure="1a"),
        L.loop_efficiency("resnet18", size=128, batch=32, steps=2, repeats=R + 2, figure="1b"),
    ])
    step("2", "input pipeline", lambda: L.input_pipeline(batch=32, steps=4, repeats=R + 2, real=demo()))
    step("3", "frozen prefix", lambda: L.frozen_prefix(model="efficientnet_lite0", upto="blocks.9", size=128,
                                                       batch=32, steps=2, repeats=R))
    step("4", "feature cache", lambda: L.feature_cache(epochs=10, n_train=160, n_val=40, repeats=2, real=demo()))
    from bench.extraction import frozen_extraction

    step("8", "frozen feature extraction", lambda: frozen_extraction(
        batch=32, repeats=R + 1, real=demo(), bf16_probe=True if args.bf16_probe else None))
    from bench.latency import latency_rows

    step("7", "prediction latency", lambda: latency_rows(repeats=R + 2))
    from bench.allocator import allocator_rows

    step("10", "CPU allocator", lambda: allocator_rows(batch=32, steps=2, epochs=2, repeats=2))

    from bench.evidence import evidence

    # One seed keeps the suite at a few minutes; python -m bench.evidence --seeds 0,1,2 for more.
    step("11", "default vs linear probe", lambda: evidence(
        seeds=(0,), out_dir=Path(args.out) if args.out else RESULTS, command="python -m bench --only 11"))

    from bench.startup import startup_rows

    step("12", "command line start", lambda: startup_rows(repeats=R + 2))

    def app():
        from bench.app_figures import app_rows

        try:
            return app_rows(overhead_epochs=4, window_epochs=30, requests=8)
        except Exception:  # e.g. the server killed from outside on a shared machine: once more
            log.exception("the app figures failed; trying once more with a fresh server")
            return app_rows(overhead_epochs=4, window_epochs=30, requests=8)

    if only & {"5", "6"}:
        step("5" if "5" in only else "6", "the app (figures 5 and 6)", app)

    seconds = time.perf_counter() - t_start
    order = {f: i for i, f in enumerate(["1a", "1b", "2", "3", "4", "5", "6", "6b", "6c", "7", "7b", "8", "8b",
                                         "8c", "10", "11a", "11b", "11c", "11d", "11e", "11f", "12", "12b"])}
    rows.sort(key=lambda r: order.get(r.figure, 99))
    info = machine()
    info["repeats"] = str(R)
    out = Path(args.out) if args.out else RESULTS
    cmd = "python -m bench" + ("" if only == set(FIGURES) else f" --only {args.only}")
    md, csv_path = write_results(rows, out, args.stem, info, cmd, seconds)
    print(console_table(rows))
    print(f"\n{seconds:.0f} s; written: {md} and {csv_path}")
    print("Figure 9 (GPU) is separate: python bench/gpu.py on a GPU machine.")
    return 0 if all(r.value is not None or r.ok is None for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
