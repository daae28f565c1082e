"""Figure 11b: when the default plan trains body layers, what its evidence phase costs against ``--plan head``.

``python -m bench.evidence_phase [--seed 0] [--train 150] [--val 50] [--repeats 2]``
writes ``bench/results/evidence_phase.md`` and ``.json``.

On photo crops with more than 100 training images per class (past the four
cases' small-data bound, where the default trains body layers), alternating
in fresh interpreters with empty feature caches:

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


def phase_of(log_file: Path) -> dict:
    """The evidence phase the default's log reports: seconds in all, images passed, pass and probe seconds."""
    m = PHASE.search(log_file.read_text(encoding="utf-8", errors="replace"))
    if m is None:
        raise RuntimeError(f"{log_file}: no 'evidence phase' line (did the default run its evidence pass?)")
    return {"seconds": float(m[1]), "images": int(m[2]), "pass_seconds": float(m[3]), "probe_seconds": float(m[4])}


def measure(seed: int, train: int, val: int, repeats: int, work: Path) -> dict:
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


def markdown(r: dict, command: str) -> str:
    lines = ["# Figure 11b: the evidence phase when the default trains body layers\n",
             f"`{command}`: photo crops, 8 classes, {r['train_per_class']} training and {r['val_per_class']} "
             f"validation images per class, seed {r['seed']}; fresh interpreters and empty feature caches, "
             "alternated.\n",
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
        r = measure(args.seed, args.train, args.val, args.repeats, Path(tmp))
    r["seconds"] = time.perf_counter() - started
    out = Path(args.out) if args.out else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(r, command.strip())
    (out / "evidence_phase.md").write_text(text, encoding="utf-8")
    (out / "evidence_phase.json").write_text(json.dumps(r, indent=2) + "\n", encoding="utf-8")
    print(text)
    return 0 if r["ratio"] <= TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
