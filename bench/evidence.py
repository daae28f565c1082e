"""Figure 11: does the default beat a tuned linear probe? Side by side, on data unlike and like ImageNet.

``python -m bench.evidence [--seeds 0,1,2] [--benchmarks glyphs,photos]`` (or
``python -m bench --only 11``, one seed) writes ``bench/results/evidence.md``
and ``evidence.json``.

For each benchmark and seed, in one run, on the same generated folder:

* **default**: ``python -m tl_studio train DATA --out RUN``, whatever the
  default is at the time (the plan it recommends, its epochs, its rate);
* **head**: the same with ``--plan head`` (a new head on the whole frozen body);
* **probe**: ``python -m bench.probe_baseline DATA``: standardised frozen
  final pooled features + logistic regression, C by 3-fold CV on train
  (the baseline), and the same probe at every body layer (the best single
  layer by validation accuracy is an oracle; the layer the CV picks is not).

Each side is a fresh interpreter and its wall time is "time to the model"
(imports, decoding, the frozen pass and the fit or the training). The probe
process fits every layer; the baseline's time is that wall time less the
other layers' fits (the one frozen pass runs the whole network either way).
The val split is scored once by each side; accuracy is
``summary.json``'s ``val_accuracy`` when the run reports one, else its
``best_val_accuracy`` (the best epoch's, an optimistic reading for the
default).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: python bench/evidence.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS, ROOT, Row

log = logging.getLogger("bench.evidence")

BENCHMARKS = ("glyphs", "photos")
# A side that runs longer than this is stopped and reported as failed: the
# figure must finish on a busy 2-core machine.
SIDE_TIMEOUT_S = 1800


def _env() -> dict[str, str]:
    """The child interpreters import this checkout's tl_studio and bench, offline, without analytics."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    env.setdefault("TL_STUDIO_OFFLINE", "1")
    return env


def _run(args: list[str], log_file: Path) -> float:
    """Run ``python ARGS`` to completion; returns its wall seconds. Output goes to ``log_file``.

    Each side gets a fresh, empty feature cache folder: no side reuses another's frozen pass.
    """
    env = _env()
    env["TL_STUDIO_CACHE_DIR"] = tempfile.mkdtemp(prefix="cache-", dir=log_file.parent)
    t = time.perf_counter()
    with open(log_file, "w", encoding="utf-8") as fh:
        proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT,
                              timeout=SIDE_TIMEOUT_S, check=False)
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        tail = log_file.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"python {' '.join(args[:3])} ... exited {proc.returncode}: {' / '.join(tail)}")
    return seconds


def generate(benchmark: str, out: Path, seed: int) -> float:
    """Write one benchmark's folder with its defaults at ``seed``; returns the seconds taken."""
    from bench import glyphs, photos

    t = time.perf_counter()
    if benchmark == "glyphs":
        glyphs.generate(out, glyphs.Spec(seed=seed))
    elif benchmark == "photos":
        photos.generate(out, photos.Spec(seed=seed))
    else:
        raise ValueError(f"benchmark: unknown {benchmark!r}; known: {', '.join(BENCHMARKS)}")
    return time.perf_counter() - t


def _plan_summary(run_dir: Path) -> str:
    """What the default chose, in a few words, from the run's config.json."""
    try:
        cfg = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "?"
    plan, train = cfg.get("plan", {}), cfg.get("train", {})
    trained = [k for k, v in (plan.get("layers") or {}).items() if v == "train"]
    parts = [f"cut after {plan['cut_after']}" if plan.get("cut_after") else "no cut",
             f"taps {'/'.join(plan['taps'])}" if plan.get("taps") else "",
             f"body {plan.get('default', '?')}" + (f" except {len(trained)} trained" if trained else ""),
             f"solver {summary_solver(run_dir)}",
             f"head hidden {(plan.get('head') or {}).get('hidden')}",
             f"{train.get('epochs')} epochs, lr {train.get('lr')}, augment {train.get('augment')}"]
    if plan.get("unfreeze_all_at") is not None:
        parts.append(f"all unfrozen at epoch {plan['unfreeze_all_at']}")
    return "; ".join(p for p in parts if p)


def summary_solver(run_dir: Path) -> str:
    try:
        return str(json.loads((run_dir / "summary.json").read_text(encoding="utf-8")).get("solver"))
    except (OSError, ValueError):
        return "?"


def train_side(data: Path, run_dir: Path, extra: list[str]) -> dict:
    """``python -m tl_studio train DATA --out RUN [extra]``: accuracy, wall seconds, what it chose."""
    seconds = _run(["-m", "tl_studio", "train", str(data), "--out", str(run_dir), *extra],
                   run_dir.with_suffix(".log"))
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    key = "val_accuracy" if summary.get("val_accuracy") is not None else "best_val_accuracy"
    return {"accuracy": summary.get(key), "accuracy_key": key, "seconds": seconds,
            "train_seconds": summary.get("train_seconds"), "epochs_run": summary.get("epochs_run"),
            "plan": _plan_summary(run_dir)}


def probe_side(data: Path, out_json: Path) -> dict:
    """``python -m bench.probe_baseline DATA --json``: the baseline and per-layer probes, with wall times."""
    seconds = _run(["-m", "bench.probe_baseline", str(data), "--json", str(out_json)], out_json.with_suffix(".log"))
    r = json.loads(out_json.read_text(encoding="utf-8"))
    other_fits = r["seconds"]["fits_all_layers"] - r["baseline"]["fit_seconds"]
    return {
        "baseline": {"accuracy": r["baseline"]["val_accuracy"], "layer": r["baseline"]["layer"],
                     "C": r["baseline"]["C"], "seconds": seconds - other_fits},
        "best_layer": {"accuracy": r["best_layer"]["val_accuracy"], "layer": r["best_layer"]["layer"],
                       "seconds": seconds},
        "cv_layer": {"accuracy": r["cv_chosen_layer"]["val_accuracy"], "layer": r["cv_chosen_layer"]["layer"],
                     "seconds": seconds},
        "layers": {p["layer"]: p["val_accuracy"] for p in r["layers"]},
        "seconds": seconds,
        "inside": r["seconds"],
        "images": {"train": r["train_images"], "val": r["val_images"], "classes": r["classes"]},
    }


def one(benchmark: str, seed: int, work: Path, sides: tuple[str, ...] = ("probe", "default", "head")) -> dict:
    """Every side on one generated folder."""
    data = work / f"{benchmark}-{seed}"
    out: dict = {"benchmark": benchmark, "seed": seed, "generate_seconds": generate(benchmark, data, seed)}
    for side in sides:
        log.info("%s seed %d: %s ...", benchmark, seed, side)
        if side == "probe":
            out["probe"] = probe_side(data, work / f"{benchmark}-{seed}-probe.json")
        else:
            extra = ["--plan", "head"] if side == "head" else []
            out[side] = train_side(data, work / f"{benchmark}-{seed}-{side}", extra)
        log.info("%s seed %d: %s done", benchmark, seed, side)
    return out


def measure(benchmarks=BENCHMARKS, seeds=(0,), work: Path | None = None) -> list[dict]:
    """Run every benchmark at every seed; a side that fails is recorded with its error, the rest still run."""
    results = []
    with tempfile.TemporaryDirectory(prefix="tl-evidence-") as tmp:
        base = Path(work) if work else Path(tmp)
        for b in benchmarks:
            for s in seeds:
                try:
                    results.append(one(b, s, base))
                except Exception as exc:  # noqa: BLE001 - one benchmark failing never hides the others
                    log.exception("%s seed %d failed", b, s)
                    results.append({"benchmark": b, "seed": s, "error": f"{type(exc).__name__}: {exc}"})
    return results


# ---- reporting ---------------------------------------------------------------------------
def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def _per_seed(rs: list[dict], fn) -> str:
    return ", ".join(f"seed {r['seed']}: {fn(r)}" for r in rs)


def _acc(*keys: str, layer: bool = True):
    """A formatter for ``_per_seed``: the accuracy at ``r[keys...]``, with its layer if asked and known."""

    def fmt(r: dict) -> str:
        d = r
        for k in keys:
            d = d[k]
        return f"{d['layer']} {d['accuracy']:.3f}" if layer and "layer" in d else f"{d['accuracy']:.3f}"

    return fmt


def _secs(*keys: str):
    def fmt(r: dict) -> str:
        d = r
        for k in keys:
            d = d[k]
        return f"{d:.0f}"

    return fmt


def rows_for(benchmark: str, results: list[dict], letters: str) -> list[Row]:
    """Three rows per benchmark: default - baseline, default - best layer (points), time to the model."""
    rs = [r for r in results if r["benchmark"] == benchmark and "error" not in r]
    errors = [r for r in results if r["benchmark"] == benchmark and "error" in r]
    what = {"glyphs": "glyphs (unlike ImageNet)", "photos": "photo crops (like ImageNet)"}[benchmark]
    if not rs:
        msg = errors[0]["error"] if errors else "not run"
        return [Row(f"11{letters[0]}", f"default - linear probe (points), {what}", None, "points", "> 0", False,
                    f"FAILED: {msg}"[:300])]
    gain = _mean(100 * (r["default"]["accuracy"] - r["probe"]["baseline"]["accuracy"]) for r in rs)
    worst = min(100 * (r["default"]["accuracy"] - r["probe"]["baseline"]["accuracy"]) for r in rs)
    # Issue 13: unlike ImageNet (a middle layer probes 3+ points above the final one) the default must be
    # 2 points above the probe; like ImageNet, never more than 1 point below. Judged on every seed.
    floor = 2.0 if benchmark == "glyphs" else -1.0
    ratio = _mean(r["default"]["seconds"] / r["head"]["seconds"] for r in rs)
    gain_best = _mean(100 * (r["default"]["accuracy"] - r["probe"]["best_layer"]["accuracy"]) for r in rs)
    t_def = _mean(r["default"]["seconds"] for r in rs)
    t_base = _mean(r["probe"]["baseline"]["seconds"] for r in rs)
    n = rs[0]["probe"]["images"]
    size = f"{n['classes']} classes, {n['train'] // n['classes']} train + {n['val'] // n['classes']} val per class"
    seeds = f"mean of {len(rs)} seed(s)"
    if errors:
        seeds += f"; failed: {', '.join(str(e['seed']) for e in errors)}"
    limit = ("the best single-layer probe: a linear read-out of one frozen layer; a default that trains "
             "more (a cut, taps, a hidden layer, unfrozen blocks) should reach it.")
    lever = ("tl_studio/strategy (recommend.py, rules.py: the plan, cut and epochs the default picks) and "
             "tl_studio/train (the head's regularisation, the schedule).")
    baseline_layer = rs[0]["probe"]["baseline"]["layer"]
    return [
        Row(f"11{letters[0]}", f"default - linear probe (points), {what}", gain, "points",
            f">= {floor:+.0f} every seed", worst >= floor,
            f"{seeds}; worst seed {worst:+.1f}; {size}; default {_per_seed(rs, _acc('default'))}; probe on {baseline_layer} "
            f"{_per_seed(rs, _acc('probe', 'baseline', layer=False))}; --plan head "
            f"{_per_seed(rs, _acc('head'))}; default's plan: {rs[0]['default']['plan']}",
            limit=limit, lever=lever),
        Row(f"11{letters[1]}", f"default - best single-layer probe (points), {what}", gain_best, "points",
            "reference", None,
            f"best layer (by val) {_per_seed(rs, _acc('probe', 'best_layer'))}; "
            f"layer the train CV picks {_per_seed(rs, _acc('probe', 'cv_layer'))}",
            limit=limit, lever=lever),
        Row(f"11{letters[2]}", f"time to the model, default / --plan head, {what}", ratio, "x", "<= 1.5",
            ratio <= 1.5 if "body frozen" in rs[0]["default"]["plan"] else None,
            f"wall s, a fresh interpreter and an empty feature cache each: default {_per_seed(rs, _secs('default', 'seconds'))}; "
            f"--plan head {_per_seed(rs, _secs('head', 'seconds'))}; "
            f"linear probe {_per_seed(rs, _secs('probe', 'baseline', 'seconds'))}; "
            f"all-layer probe {_per_seed(rs, _secs('probe', 'seconds'))} "
            f"(default / linear probe {t_def / t_base:.1f}x)",
            limit="the frozen pass over every image (shared by every side) plus the fit.",
            lever="tl_studio/train (feature cache, epochs) and tl_studio/strategy (similarity measurement)."),
    ]


def evidence_rows(results: list[dict], benchmarks=BENCHMARKS) -> list[Row]:
    rows: list[Row] = []
    for b, letters in zip(benchmarks, ("abc", "def")):
        rows += rows_for(b, results, letters)
    return rows


def markdown(results: list[dict], rows: list[Row], command: str, seconds: float) -> str:
    from bench.common import fmt_value

    lines = [
        "# Figure 11: the default against a tuned linear probe",
        "",
        f"Command: `{command}`, {seconds:.0f} s in all. Each side is a fresh interpreter on the same generated "
        "folder; accuracy on the val split, scored once.",
        "",
        "| # | figure | value | target | met | detail |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {r.figure} | {r.name} | {fmt_value(r)} | {r.target} | {r.verdict()} | "
              f"{r.detail.replace('|', '/')} |" for r in rows]
    lines += ["", "## Per seed", "",
              "| benchmark | seed | default | --plan head | probe (final) | best layer (val) | layer by train CV "
              "| time: default / head / probe / all-layer probe (s) |",
              "|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['benchmark']} | {r['seed']} | failed: {r['error'][:120]} | | | | | |")
            continue
        p, d, h = r["probe"], r["default"], r["head"]
        lines.append(
            f"| {r['benchmark']} | {r['seed']} | {d['accuracy']:.3f} | {h['accuracy']:.3f} | "
            f"{p['baseline']['accuracy']:.3f} | {p['best_layer']['layer']} {p['best_layer']['accuracy']:.3f} | "
            f"{p['cv_layer']['layer']} {p['cv_layer']['accuracy']:.3f} | "
            f"{d['seconds']:.0f} / {h['seconds']:.0f} / {p['baseline']['seconds']:.0f} / {p['seconds']:.0f} |")
    lines += ["", "## Probe accuracy by layer (val)", ""]
    for r in results:
        if "error" not in r:
            layers = r["probe"]["layers"]
            lines.append(f"- {r['benchmark']} seed {r['seed']}: "
                         + ", ".join(f"{k} {v:.2f}" for k, v in layers.items()))
    lines += ["", "## What the default chose", ""]
    for r in results:
        if "error" not in r:
            lines.append(f"- {r['benchmark']} seed {r['seed']}: {r['default']['plan']}")
    return "\n".join(lines) + "\n"


def write(results: list[dict], rows: list[Row], out_dir: Path, command: str, seconds: float) -> tuple[Path, Path]:
    from dataclasses import asdict

    from tl_studio.atomic import write_text

    md, js = out_dir / "evidence.md", out_dir / "evidence.json"
    write_text(md, markdown(results, rows, command, seconds))
    write_text(js, json.dumps({"command": command, "seconds": seconds, "results": results,
                               "rows": [asdict(r) for r in rows]}, indent=2) + "\n")
    return md, js


def evidence(seeds=(0,), benchmarks=BENCHMARKS, out_dir: Path = RESULTS, command: str = "") -> list[Row]:
    """The figure: measure, write evidence.md/.json, return the rows (what ``python -m bench`` calls)."""
    t = time.perf_counter()
    results = measure(benchmarks, seeds)
    rows = evidence_rows(results, benchmarks)
    seconds = time.perf_counter() - t
    cmd = command or f"python -m bench.evidence --seeds {','.join(map(str, seeds))} --benchmarks {','.join(benchmarks)}"
    md, js = write(results, rows, Path(out_dir), cmd, seconds)
    log.info("figure 11 written: %s and %s", md, js)
    return rows


def main(argv=None) -> int:
    from bench.common import console_table

    p = argparse.ArgumentParser(prog="python -m bench.evidence", description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0", help="comma-separated seeds of the generated data (default 0)")
    p.add_argument("--benchmarks", default=",".join(BENCHMARKS), help=f"some of {','.join(BENCHMARKS)}")
    p.add_argument("--out", default=None, help="results folder (default bench/results)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    seeds = tuple(int(s) for s in args.seeds.split(",") if s.strip())
    benchmarks = tuple(b.strip() for b in args.benchmarks.split(",") if b.strip())
    unknown = set(benchmarks) - set(BENCHMARKS)
    if unknown:
        p.error(f"--benchmarks: unknown {', '.join(sorted(unknown))}; known: {', '.join(BENCHMARKS)}")
    rows = evidence(seeds, benchmarks, Path(args.out) if args.out else RESULTS,
                    " ".join(["python -m bench.evidence", *(argv if argv is not None else sys.argv[1:])]))
    print(console_table(rows))
    return 0 if all(r.value is not None for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
