"""What every figure shares: result rows, side-by-side timing, small data, the results table.

Machines here are shared and noisy, so each ratio is measured side by side
in one process: the two sides alternate (A, B, A, B, ...) and each side's
median is taken, so that a burst of someone else's load hits both sides
rather than one.
"""

from __future__ import annotations

import csv
import logging
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import torch

log = logging.getLogger("bench")

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "assets" / "demo"
RESULTS = ROOT / "bench" / "results"


@dataclass
class Row:
    """One line of the results table."""

    figure: str  # "1a", "5", ...
    name: str
    value: float | None  # the ratio (or the absolute figure where the issue asks for one)
    unit: str  # "ratio", "s", "ms", "img/s", ...
    target: str  # e.g. ">= 0.95"
    ok: bool | None  # None: no target, or not measurable here
    detail: str  # both sides' medians, repeats, anything needed to read the value
    limit: str = ""  # the limit this figure approaches
    lever: str = ""  # which part of the engine to change if it falls short
    extra: dict = field(default_factory=dict)

    def verdict(self) -> str:
        return {True: "yes", False: "NO", None: "-"}[self.ok]


def median(values) -> float:
    return float(statistics.median(values))


def alternate(sides: dict[str, Callable[[], float]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Run each side ``warmup`` times unmeasured, then A, B, A, B, ... ``repeats`` rounds.

    Each callable returns its own measurement (seconds, or a rate); the lists
    of measurements are returned by side. The order of the sides swaps every
    round so that neither always runs right after the other.
    """
    names = list(sides)
    for _ in range(warmup):
        for n in names:
            sides[n]()
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        order = names if r % 2 == 0 else names[::-1]
        for n in order:
            out[n].append(sides[n]())
    return out


def pair_range(num: list[float], den: list[float]) -> str:
    """The ratio of each alternation's pair, lowest to highest: how noisy the machine was."""
    ratios = sorted(n / d for n, d in zip(num, den))
    return f"pairs {ratios[0]:.2f}-{ratios[-1]:.2f}" if ratios else ""


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def check(value: float | None, target: float, higher_is_better: bool = True) -> bool | None:
    if value is None:
        return None
    return value >= target if higher_is_better else value <= target


# ---- data ------------------------------------------------------------------------------
def synthetic_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """Random uint8 images (N, 3, S, S): the "already in memory" input."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


def synthetic_data(n_train: int, size: int, classes: int = 4, n_val: int = 0, seed: int = 0):
    """TrainData over random in-memory images (what the engine reads: ``images.tensor``)."""
    from tl_studio.train import TrainData

    n = n_train + n_val
    images = SimpleNamespace(tensor=synthetic_images(n, size, seed))
    labels = torch.arange(n) % classes
    return TrainData(
        images,
        labels,
        list(range(n_train)),
        list(range(n_train, n)),
        [f"c{i}" for i in range(classes)],
    )


def demo_data(model: str = "efficientnet_lite0"):
    """The demo dataset (real JPEG files), decoded once; returns (TrainData, decode seconds)."""
    from tl_studio.data import load_dataset
    from tl_studio.train import data_from_dataset

    t = time.perf_counter()
    data = data_from_dataset(load_dataset(DEMO), model)
    return data, time.perf_counter() - t


def subset(data, n_train: int, n_val: int):
    """The first n per split of a TrainData, classes kept balanced by taking them in turn."""
    from tl_studio.train import TrainData

    def take(indices, n):
        by_class: dict[int, list[int]] = {}
        for i in indices:
            by_class.setdefault(int(data.labels[i]), []).append(i)
        out, k = [], 0
        while len(out) < n and any(k < len(v) for v in by_class.values()):
            out += [v[k] for v in by_class.values() if k < len(v)][: n - len(out)]
            k += 1
        return out

    return TrainData(data.images, data.labels, take(data.train_idx, n_train), take(data.val_idx, n_val),
                     data.classes, data.info)


# ---- the engine, driven epoch by epoch ---------------------------------------------------
def engine_trainer(plan, config, data, pretrained: bool = False):
    """A Trainer set up as ``fit()`` sets it up, so that single epochs can be timed.

    ``epoch()`` runs one ``Trainer.train_epoch`` (the engine's whole step:
    inputs, augmentation, frozen prefix, schedule, metrics) and returns its
    seconds; everything between epochs (validation, checkpoints) is left out,
    which is what "steady-state images/s" means.
    """
    from tl_studio.train import Trainer

    tr = Trainer(plan, config, data, pretrained=pretrained)
    tr.build()
    tr.start_phase(0)
    tr.inputs.build_cache(config, tr.batch_size)
    state = {"epoch": 0}

    def epoch() -> float:
        t = time.perf_counter()
        tr.train_epoch(state["epoch"], total_steps=10**6, warmup=0)
        state["epoch"] += 1
        return time.perf_counter() - t

    tr.run_epoch = epoch
    return tr


# ---- reporting -------------------------------------------------------------------------
def machine() -> dict[str, str]:
    from tl_studio import devices

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "torch threads": str(torch.get_num_threads()),
        "torch": torch.__version__,
        "fast bf16 (AVX512-BF16/AMX)": str(devices.cpu_has_fast_bf16()),
        "python": platform.python_version(),
    }


def fmt_value(r: Row) -> str:
    if r.value is None:
        return "n/a"
    v = r.value
    if r.unit == "ratio":
        return f"{v:.3f}"
    return f"{v:.3g} {r.unit}" if abs(v) < 1000 else f"{v:,.0f} {r.unit}"


def markdown(rows: list[Row], info: dict[str, str], command: str, seconds: float,
             title: str = "TL Studio benchmarks (CPU)") -> str:
    lines = [
        f"# {title}",
        "",
        f"Command: `{command}`, {seconds:.0f} s in all.",
        "",
        "Machine: " + "; ".join(f"{k}: {v}" for k, v in info.items()) + ".",
        "",
        "| # | figure | value | target | met | measured side by side (medians) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        detail = r.detail.replace("|", "/")
        lines.append(f"| {r.figure} | {r.name} | {fmt_value(r)} | {r.target} | {r.verdict()} | {detail} |")
    lines += ["", "## What each figure approaches, and what to change if it falls short", ""]
    seen = set()
    for r in rows:
        key = (r.limit, r.lever)
        if key in seen or not (r.limit or r.lever):
            continue
        seen.add(key)
        lines.append(f"- **{r.figure} {r.name}.** Limit: {r.limit} Lever: {r.lever}")
    return "\n".join(lines) + "\n"


def console_table(rows: list[Row]) -> str:
    head = ("#", "figure", "value", "target", "met")
    body = [(r.figure, r.name, fmt_value(r), r.target, r.verdict()) for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths]), *(line(b) for b in body)])


def write_results(rows: list[Row], out_dir: Path, stem: str, info: dict[str, str], command: str,
                  seconds: float, title: str = "TL Studio benchmarks (CPU)") -> tuple[Path, Path]:
    """``<stem>.md`` and ``<stem>.csv`` in ``out_dir``, each written atomically."""
    from tl_studio.atomic import atomic_path, write_text

    md = out_dir / f"{stem}.md"
    write_text(md, markdown(rows, info, command, seconds, title))
    csv_path = out_dir / f"{stem}.csv"
    fields = ["figure", "name", "value", "unit", "target", "ok", "detail", "limit", "lever"]
    with atomic_path(csv_path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for r in rows:
            d = asdict(r)
            w.writerow({k: d[k] for k in fields})
    return md, csv_path
