"""A server runs for weeks: one-epoch jobs, one after another in one app process, do not grow its memory.

The child process is an app process without the web server: a shared-mode
workspace, the demo classes (eight photos each), and the Train tab's own
``start`` (a run folder per job, the workspace's decoded images reused), a
head-only plan. It reports its resident memory after each job; from the
third job on (the first ones fill caches that stay), twelve jobs may add at
most 40 MB. Before jobs let go, each one kept a CPU copy of its weights
(13 MB for EfficientNet-Lite0) and its data for ever.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .trainkit import DEMO, ROOT

JOBS = 12
LIMIT_MB = 40


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def child(workdir: Path) -> list[float]:
    from dataclasses import replace

    from tl_studio.data import load_dataset
    from tl_studio.plan import Plan
    from tl_studio.runtime import tune_allocator
    from tl_studio.train import FINISHED, TrainConfig
    from tl_studio.ui import session as S
    from tl_studio.ui.train_tab import start
    from tl_studio.workspace import WorkspaceManager

    tune_allocator()  # as launch.py does
    data = workdir / "data"
    for split in ("train", "val"):
        for cls in sorted(p.name for p in (DEMO / split).iterdir()):
            (data / split / cls).mkdir(parents=True)
            for photo in sorted((DEMO / split / cls).iterdir())[: 8 if split == "train" else 3]:
                shutil.copy(photo, data / split / cls)
    ws = WorkspaceManager(workdir / "runs", shared=True).attach(None)
    dataset = load_dataset(data)
    ws.session = replace(S.Session(), dataset=dataset,
                         plan=Plan.head_only("efficientnet_lite0", len(dataset.classes)))
    config = TrainConfig(epochs=1, batch_size=8, device="cpu")
    rss = []
    for _ in range(JOBS):
        job = start(ws, "efficientnet_lite0", config)
        assert job.wait(300), "a job did not end"
        assert job.status == FINISHED, job.error
        rss.append(_rss_mb())
    return rss


def test_twelve_jobs_in_one_process_do_not_grow_its_memory(tmp_path):
    env = {**os.environ, "TL_STUDIO_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "tests.test_job_memory", str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rss = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(rss) == JOBS
    growth = rss[-1] - rss[2]
    assert growth <= LIMIT_MB, f"RSS grew {growth:.0f} MB from job 3 to job {JOBS}: {[round(r) for r in rss]}"


if __name__ == "__main__":
    print(json.dumps(child(Path(sys.argv[1]))))
