"""Figure 12: how fast the command line answers, against importing torch, side by side.

    python -m bench.startup            # this figure alone: prints the table
    python -m bench --only 12          # the same, written to bench/results/

``tl-studio --help`` parses its arguments before anything heavy loads, so it
should cost a fraction of ``python -c "import torch"``: the target is at most
0.3 of it. ``tl-studio runs`` (a real run folder) is shown beside it for
reading (no target). Each side is a fresh interpreter, alternated with the
other, so a busy machine slows both.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import Row, alternate, check, median, pair_range

ROOT = Path(__file__).resolve().parents[1]
TARGET = 0.3


def _seconds(argv: list[str], env: dict) -> float:
    t = time.perf_counter()
    subprocess.run(argv, env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def _run_folder(root: Path) -> Path:
    """A runs folder holding one small real run (head only, 1 epoch, random weights: no download)."""
    from tl_studio.plan import Plan
    from tl_studio.train import TrainConfig, start_job

    from bench.common import synthetic_data

    data = synthetic_data(16, 64, classes=2, n_val=8)
    job = start_job(Plan.head_only("efficientnet_lite0", 2), TrainConfig(epochs=1, batch_size=8, device="cpu"),
                    data, run_dir=root / "one", pretrained=False)
    job.wait()
    return root


def startup_rows(repeats: int = 5) -> list[Row]:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="tl-bench-runs-") as tmp:
        runs = _run_folder(Path(tmp))
        got = alternate({
            "torch": lambda: _seconds([py, "-c", "import torch"], env),
            "help": lambda: _seconds([py, "-m", "tl_studio", "--help"], env),
            "runs": lambda: _seconds([py, "-m", "tl_studio", "runs", "--runs-dir", str(runs)], env),
        }, repeats=repeats)
    torch_s, help_s, runs_s = (median(got[k]) for k in ("torch", "help", "runs"))
    ratio = help_s / torch_s
    return [
        Row("12", "tl-studio --help / import torch", round(ratio, 3), "ratio", f"<= {TARGET}",
            check(ratio, TARGET, higher_is_better=False),
            f"--help {help_s * 1000:.0f} ms, import torch {torch_s * 1000:.0f} ms (medians of {repeats}, "
            f"fresh interpreters); {pair_range(got['help'], got['torch'])}",
            limit="the interpreter's own start", lever="imports at module level in tl_studio/cli/"),
        Row("12b", "tl-studio runs / import torch", round(runs_s / torch_s, 3), "ratio", "-", None,
            f"runs {runs_s * 1000:.0f} ms (one run; pandas, no torch); {pair_range(got['runs'], got['torch'])}",
            limit="importing pandas", lever="tl_studio/runs/ imports"),
    ]


if __name__ == "__main__":
    from bench.common import console_table

    print(console_table(startup_rows()))
