"""Figure 11b: what the evidence costs, against a ``--plan head`` run on the same data.

``python -m bench.evidence_phase [--seed 0] [--train 150] [--val 50] [--repeats 2]``
writes ``bench/results/evidence_phase.md`` and ``.json``. Two parts, each
alternating fresh interpreters with empty feature caches:

**Frozen** (the glyph benchmark, 32 training images per class: the default
trains no body layer): the default's wall time (``train DATA``: decoding,
the evidence pass, the fitted head) against ``--plan head``'s. Target: at
most 1.5x (medians): the evidence costs about one pass, not three.

**Body trains** (photo crops with more than 100 training images per class,
past the four cases' small-data bound):

* **default**: ``python -m tl_studio train DATA --epochs 1``; its log times
  the evidence phase on its own ("evidence phase: S s; the frozen pass ...,
  the probes ..."), the figure's numerator;
* **head**: ``python -m tl_studio train DATA --plan head``, its wall time
  (imports, decoding, the frozen pass over every image, the fitted head).

Target: the evidence phase at most 0.5x a ``--plan head`` run (medians).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: python bench/evidence_phase.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS
from bench.evidence import train_side

log = logging.getLogger("bench.evidence_phase")

PHASE = re.compile(r"evidence phase: ([0-9.]+) s; the frozen pass over (\d+) images ([0-9.]+) s .*the probes "
                   r"([0-9.]+) s")
TARGET = 0.5
FROZEN_TARGET = 1.5


def phase_of(log_file: Path) -> dict:
    """The evidence phase the default's log reports: seconds in all, images passed, pass and probe seconds."""
    m = PHASE.search(log_file.read_text(encoding="utf-8", errors="replace"))
    if m is None:
        raise RuntimeError(f"{log_file}: no 'evidence phase' line (did the default run its evidence pass?)")
    return {"seconds": float(m[1]), "images": int(m[2]), "pass_seconds": float(m[3]), "probe_seconds": float(m[4])}


def measure_frozen(seed: int, repeats: int, work: Path) -> dict:
    """The glyph benchmark: the default's whole run / ``--plan head``'s, both a fitted head on frozen features."""
    from bench import glyphs

    data = work / "glyphs"
    glyphs.generate(data, glyphs.Spec(seed=seed))
    rows = []
    for r in range(repeats):
        default = train_side(data, work / f"frozen-default-{r}", [])
        head = train_side(data, work / f"frozen-head-{r}", ["--plan", "head"])
        rows.append({"default": default, "head": head, "ratio": default["seconds"] / head["seconds"]})
        log.info("frozen, repeat %d: default %.1f s, --plan head %.1f s: %.2fx", r, default["seconds"],
                 head["seconds"], rows[-1]["ratio"])
    default = statistics.median(x["default"]["seconds"] for x in rows)
    head = statistics.median(x["head"]["seconds"] for x in rows)
    return {"seed": seed, "repeats": rows, "median_default_seconds": default, "median_head_seconds": head,
            "ratio": default / head, "target": FROZEN_TARGET}


def measure(seed: int, train: int, val: int, repeats: int, work: Path) -> dict:
    """Photo crops past the small-data bound: the default's evidence phase / ``--plan head``'s wall time."""
    from bench import photos

    data = work / "photos"
    photos.generate(data, photos.Spec(seed=seed, train=train, val=val))
    rows = []
    for r in range(repeats):
        default = train_side(data, work / f"default-{r}", ["--epochs", "1"])
        default["phase"] = phase_of((work / f"default-{r}").with_suffix(".log"))
        head = train_side(data, work / f"head-{r}", ["--plan", "head"])
        rows.append({"default": default, "head": head, "ratio": default["phase"]["seconds"] / head["seconds"]})
        log.info("repeat %d: evidence phase %.1f s, --plan head %.1f s: %.2fx", r, default["phase"]["seconds"],
                 head["seconds"], rows[-1]["ratio"])
    phase = statistics.median(x["default"]["phase"]["seconds"] for x in rows)
    head = statistics.median(x["head"]["seconds"] for x in rows)
    return {"seed": seed, "train_per_class": train, "val_per_class": val, "repeats": rows,
            "median_phase_seconds": phase, "median_head_seconds": head, "ratio": phase / head, "target": TARGET}


def markdown(frozen: dict, r: dict, command: str) -> str:
    lines = ["# Figure 11b: what the evidence costs\n", f"`{command}`; fresh interpreters and empty feature caches, "
             "alternated.\n",
             f"## The default trains no body layer (glyphs, 10 classes, 32 training images per class, seed "
             f"{frozen['seed']})\n",
             "| repeat | default `train DATA` (s) | `--plan head` (s) | ratio | default's val accuracy | head's |",
             "|---|---|---|---|---|---|"]
    for i, x in enumerate(frozen["repeats"]):
        lines.append(f"| {i} | {x['default']['seconds']:.1f} | {x['head']['seconds']:.1f} | {x['ratio']:.2f} | "
                     f"{x['default']['accuracy']:.3f} | {x['head']['accuracy']:.3f} |")
    ok = "met" if frozen["ratio"] <= FROZEN_TARGET else "NOT met"
    lines += [f"\nMedians: default {frozen['median_default_seconds']:.1f} s, `--plan head` "
              f"{frozen['median_head_seconds']:.1f} s: **{frozen['ratio']:.2f}x** (target <= {FROZEN_TARGET}x: "
              f"{ok}).\n",
              f"## The default trains body layers (photo crops, 8 classes, {r['train_per_class']} training and "
              f"{r['val_per_class']} validation images per class, seed {r['seed']})\n",
              "| repeat | evidence phase (s) | its frozen pass: images, s | probes (s) | `--plan head` (s) | ratio | "
              "default's val accuracy (1 epoch) | head's |",
              "|---|---|---|---|---|---|---|---|"]
    for i, x in enumerate(r["repeats"]):
        p = x["default"]["phase"]
        lines.append(f"| {i} | {p['seconds']:.1f} | {p['images']}, {p['pass_seconds']:.1f} | "
                     f"{p['probe_seconds']:.1f} | {x['head']['seconds']:.1f} | {x['ratio']:.2f} | "
                     f"{x['default']['accuracy']:.3f} | {x['head']['accuracy']:.3f} |")
    ok = "met" if r["ratio"] <= TARGET else "NOT met"
    lines.append(f"\nMedians: evidence phase {r['median_phase_seconds']:.1f} s, `--plan head` "
                 f"{r['median_head_seconds']:.1f} s: **{r['ratio']:.2f}x** (target <= {TARGET}x: {ok}).")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.evidence_phase", description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train", type=int, default=150, help="training images per class (past 100: body trains)")
    p.add_argument("--val", type=int, default=50)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", default=None, help="results folder (default bench/results)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    command = "python -m bench.evidence_phase " + " ".join(argv if argv is not None else sys.argv[1:])
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tl-phase-") as tmp:
        frozen = measure_frozen(args.seed, args.repeats, Path(tmp))
        r = measure(args.seed, args.train, args.val, args.repeats, Path(tmp))
    out = Path(args.out) if args.out else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(frozen, r, command.strip())
    (out / "evidence_phase.md").write_text(text, encoding="utf-8")
    (out / "evidence_phase.json").write_text(json.dumps(
        {"frozen": frozen, "body_trains": r, "seconds": time.perf_counter() - started}, indent=2) + "\n",
        encoding="utf-8")
    print(text)
    return 0 if r["ratio"] <= TARGET and frozen["ratio"] <= FROZEN_TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
