"""Scale: time and peak memory of import, cache and one epoch as the data grows 1k -> 10k -> 50k images.

    python -m bench.scale                          # 1,000, 10,000 and 50,000 images
    python -m bench.scale --sizes 1000,10000       # quicker
    python -m bench.scale --claim                  # also 1,200 -> 12,000 at --memory-budget 512M

Each measurement is ``python -m tl_studio`` in a fresh child process on a
generated folder of small JPEGs (64 px textures whose colour and shape depend
on the class), sampled every 50 ms for its process tree's memory (the child
and any process it starts; the store decodes in threads): anonymous memory as
the sum of ``Pss_Anon`` (``/proc/PID/smaps_rollup``; a forked child's shared
pages counted once) and the sum of ``RssAnon`` (the issue's measure, which
counts such pages once per process), with the largest RSS beside it. File-backed pages (the memory-mapped store) are the
page cache's, not the run's: they are not counted, as the kernel drops them
under pressure.

Rows: ``data`` (the import: every file checked), ``train --plan head
--head-solver sgd --epochs 2`` split into the cache (the first epoch: every
image decoded once and run through the frozen network into the feature cache,
plus an epoch on it) and one epoch (the second). The growth exponent is the
log-log slope of each column against the number of images (1: linear; 0:
flat). Then a DDP row: the same training on two CPU processes
(``torch.distributed.run --nproc_per_node 2``; on GPUs one process each)
against one process; skipped with its reason when the command cannot train.
Results: ``bench/results/scale.md``.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
MODEL = "mobilenet_v3_small"  # random weights: nothing to download, 5x faster than the default on a CPU


# ---- data ---------------------------------------------------------------------------------------
def generate(root: Path, n: int, *, classes: int = 12, size: int = 64, seed: int = 0) -> Path:
    """``n`` JPEGs in ``classes`` class folders: noise over a class colour, with a class-shaped patch."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    colours = rng.integers(40, 216, size=(classes, 3))
    for c in range(classes):
        (root / f"class_{c:02d}").mkdir(parents=True, exist_ok=True)
    noise = rng.integers(-40, 40, size=(64, size, size, 3), dtype=np.int16)  # reused: generating is the slow part
    for i in range(n):
        c = i % classes
        arr = np.clip(colours[c] + noise[i % 64] + rng.integers(-20, 20, size=3), 0, 255).astype(np.uint8)
        img = Image.fromarray(arr)
        draw = ImageDraw.Draw(img)
        x, y = (int(v) for v in rng.integers(4, size // 2, size=2))
        box = (x, y, x + size // 3, y + size // 3)
        (draw.ellipse if c % 3 == 0 else draw.rectangle if c % 3 == 1 else draw.chord)(
            box, *(() if c % 3 != 2 else (0, 180)), fill=tuple(int(v) for v in 255 - colours[c]))
        img.save(root / f"class_{c:02d}" / f"{i:06d}.jpg", quality=85)
    return root


# ---- measuring a child process ------------------------------------------------------------------
def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(b")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    kids, out, todo = _children(), [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += kids.get(p, [])
    return out


def _field(path: str, name: str) -> int | None:
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                if line.startswith(name):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def sample(pids: list[int]) -> tuple[int, int, int]:
    """(sum of Pss_Anon, sum of RssAnon, sum of VmRSS) over ``pids``, in bytes."""
    pss = anon = rss = 0
    for p in pids:
        v = _field(f"/proc/{p}/smaps_rollup", "Pss_Anon:")
        a = _field(f"/proc/{p}/status", "RssAnon:")
        pss += v if v is not None else (a or 0)
        anon += a or 0
        rss += _field(f"/proc/{p}/status", "VmRSS:") or 0
    return pss, anon, rss


@dataclass
class Measured:
    seconds: float
    anon: int  # peak of the tree's summed Pss_Anon (bytes)
    rss_anon: int  # peak of the tree's summed RssAnon (counts shared pages once per process)
    rss: int  # peak of the tree's summed VmRSS
    returncode: int
    stderr: str


def run_measured(argv: list[str], *, env: dict | None = None, every: float = 0.05, timeout: float | None = None
                 ) -> Measured:
    """Run ``argv`` and sample its process tree's memory until it ends."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GRADIO_ANALYTICS_ENABLED": "False", **(env or {})}
    errf = tempfile.TemporaryFile(mode="w+")
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=errf)
    peaks = [0, 0, 0]
    done = threading.Event()

    def poll():
        while not done.is_set():
            for i, v in enumerate(sample(tree(proc.pid))):
                peaks[i] = max(peaks[i], v)
            done.wait(every)

    sampler = threading.Thread(target=poll, daemon=True)
    sampler.start()
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = proc.wait()
    seconds = time.perf_counter() - t0
    done.set()
    sampler.join()
    errf.seek(0)
    return Measured(seconds, peaks[0], peaks[1], peaks[2], rc, errf.read())


def tl_studio(*args: str) -> list[str]:
    return [sys.executable, "-m", "tl_studio", *args]


def train_argv(data: Path, out: Path, budget: str | None, *, model: str = MODEL, epochs: int = 2,
               extra: tuple[str, ...] = ()) -> list[str]:
    argv = tl_studio("train", str(data), "--out", str(out), "--model", model, "--random-weights", "--no-evidence",
                     "--plan", "head", "--head-solver", "sgd", "--epochs", str(epochs), "--overwrite", *extra)
    return argv + (["--memory-budget", budget] if budget else [])


def _epoch_seconds(run: Path) -> tuple[float | None, float | None]:
    """(first epoch's elapsed seconds, the second's own) from the run's epoch table."""
    rows = list(csv.DictReader(open(run / "metrics.csv"))) if (run / "metrics.csv").exists() else []
    if not rows:
        return None, None
    elapsed = [float(r["elapsed"]) for r in rows]
    return elapsed[0], (elapsed[1] - elapsed[0] if len(elapsed) > 1 else None)


def slope(xs: list[float], ys: list[float]) -> float | None:
    """The least-squares slope of log y against log x."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x and y and x > 0 and y > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    den = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / den if den else None


# ---- the figure ---------------------------------------------------------------------------------
def mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.0f}"


def secs(s: float | None) -> str:
    return "-" if s is None else f"{s:.1f}"


def measure_size(work: Path, n: int, budget: str | None, model: str) -> dict:
    data = generate(work / f"data{n}", n)
    imp = run_measured(tl_studio("data", str(data), "--json"))
    run = work / f"run{n}"
    tr = run_measured(train_argv(data, run, budget, model=model))
    cache_s, epoch_s = _epoch_seconds(run)
    tail = tr.stderr.strip().splitlines()[-1:] if tr.returncode else []
    store = next((ln.split("INFO", 1)[-1].strip() for ln in tr.stderr.splitlines() if "decoded images:" in ln), "")
    shutil.rmtree(data, ignore_errors=True)
    shutil.rmtree(run, ignore_errors=True)
    return {"images": n, "import_s": imp.seconds, "import_anon": imp.anon, "import_rss": imp.rss,
            "train_s": tr.seconds, "cache_s": cache_s, "epoch_s": epoch_s, "train_anon": tr.anon,
            "train_rss_anon": tr.rss_anon, "train_rss": tr.rss, "ok": tr.returncode == 0 and imp.returncode == 0,
            "error": " ".join(tail), "store": store}


def ddp_available() -> bool:
    """Whether this checkout's ``tl-studio train`` joins a torchrun process group (else each rank trains alone)."""
    return any("init_process_group" in p.read_text(encoding="utf-8", errors="replace")
               for p in (ROOT / "tl_studio").rglob("*.py"))


def ddp_rows(work: Path, n: int, model: str) -> list[str]:
    """One process against ``torch.distributed.run`` with one process per GPU (else 2 CPU processes)."""
    if not ddp_available():
        return ["DDP: skipped: this checkout's `tl-studio train` does not join a torchrun process group "
                "(no `init_process_group` in tl_studio/), so two ranks would train twice, not together."]
    data = generate(work / "ddp", n)
    try:
        gpus = int(subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout.count("GPU "))
    except (OSError, subprocess.SubprocessError):
        gpus = 0
    nproc = gpus or 2
    args = ("--plan", "full", "--epochs", "1")
    single = run_measured(train_argv(data, work / "ddp1", None, model=model) + list(args))
    ddp_argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                "-m", "tl_studio", *train_argv(data, work / "ddp2", None, model=model)[3:], *args]
    multi = run_measured(ddp_argv)
    where = f"{nproc} GPU process(es)" if gpus else "2 CPU processes"
    lines = [f"DDP, {n:,} images, `--plan full --epochs 1`, {model}:", ""]
    if single.returncode:
        lines.append(f"- one process failed: {single.stderr.strip().splitlines()[-1:]}")
    else:
        lines.append(f"- one process: {single.seconds:.1f} s, peak anonymous memory {mib(single.anon)} MiB")
    if multi.returncode:
        why = (multi.stderr.strip().splitlines() or ["no output"])[-1][:300]
        lines.append(f"- {where}: skipped, torchrun training is not available here (exit {multi.returncode}: {why})")
    else:
        speed = single.seconds / multi.seconds if not single.returncode else float("nan")
        lines.append(f"- {where}: {multi.seconds:.1f} s ({speed:.2f}x), peak anonymous memory {mib(multi.anon)} MiB "
                     "(all ranks)")
    shutil.rmtree(data, ignore_errors=True)
    return lines


def table(rows: list[dict], budget: str | None) -> list[str]:
    out = [f"`--memory-budget {budget or 'default'}`", "",
           "| images | import s | import anon MiB | cache s | epoch s | train s | train anon MiB | train RssAnon MiB "
           "| train RSS MiB | store |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        out.append(f"| {r['images']:,} | {secs(r['import_s'])} | {mib(r['import_anon'])} | {secs(r['cache_s'])} | "
                   f"{secs(r['epoch_s'])} | {secs(r['train_s'])} | {mib(r['train_anon'])} | "
                   f"{mib(r['train_rss_anon'])} | {mib(r['train_rss'])} | "
                   f"{(r['store'] or r['error'])[:90]} |")
    ok = [r for r in rows if r["ok"]]
    xs = [r["images"] for r in ok]
    cols = [("import s", "import_s"), ("import anon", "import_anon"), ("cache s", "cache_s"),
            ("epoch s", "epoch_s"), ("train anon", "train_anon")]
    slopes = ", ".join(f"{name} {s:.2f}" for name, key in cols
                       if (s := slope(xs, [r[key] for r in ok])) is not None)
    out += ["", f"Growth exponent (log-log slope against images; 1 linear, 0 flat): {slopes or '-'}"]
    if len(ok) >= 2:
        out.append(f"Peak anonymous memory, largest / smallest size: {ok[-1]['train_anon'] / ok[0]['train_anon']:.2f}x "
                   f"for {xs[-1] / xs[0]:.0f}x the images")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="1000,10000,50000", help="numbers of images (default 1000,10000,50000)")
    p.add_argument("--memory-budget", default="512M", help="tl-studio train --memory-budget (default 512M)")
    p.add_argument("--model", default=MODEL, help=f"model, random weights (default {MODEL})")
    p.add_argument("--claim", action="store_true", help="also 1,200 -> 12,000 images (the issue's memory claim)")
    p.add_argument("--no-ddp", action="store_true", help="skip the DDP comparison")
    p.add_argument("--ddp-images", type=int, default=1000)
    p.add_argument("--out", default=str(RESULTS / "scale.md"))
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    started = time.perf_counter()
    lines = ["# Scale: import, cache and one epoch against the number of images", "",
             f"`python -m bench.scale {' '.join(argv if argv is not None else sys.argv[1:])}`; "
             f"{os.cpu_count()} CPU(s); {args.model}, random weights, `--plan head --head-solver sgd --epochs 2`, "
             "64 px generated JPEGs (decoded to 224 px, 147 KiB each), 12 classes. anon: peak of the process "
             "tree's summed Pss_Anon; RssAnon: its summed RssAnon (a forked child's shared pages once per process).", ""]
    with tempfile.TemporaryDirectory(prefix="tl-scale-") as tmp:
        work = Path(tmp)
        rows = []
        for n in sizes:
            rows.append(measure_size(work, n, args.memory_budget, args.model))
            print(rows[-1], file=sys.stderr, flush=True)
        lines += table(rows, args.memory_budget)
        if args.claim:
            claim = [measure_size(work, n, "512M", args.model) for n in (1200, 12000)]
            ratio = claim[1]["train_anon"] / claim[0]["train_anon"]
            rss_ratio = claim[1]["train_rss_anon"] / claim[0]["train_rss_anon"]
            lines += ["", "## The memory claim: 1,200 -> 12,000 images at `--memory-budget 512M`", ""]
            lines += table(claim, "512M")
            lines += ["", f"Peak anonymous memory grows {rss_ratio - 1:+.0%} (summed RssAnon), {ratio - 1:+.0%} "
                      "(summed Pss_Anon) for 10x the images (target: at most +25%)."]
        if not args.no_ddp:
            lines += ["", "## DDP against one process", ""] + ddp_rows(work, args.ddp_images, args.model)
    lines += ["", f"{time.perf_counter() - started:.0f} s in all."]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
