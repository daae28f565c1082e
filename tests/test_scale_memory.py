"""Data larger than the memory budget: a run's anonymous memory stays flat when the data grows 10x.

``tl-studio train --plan head`` on generated JPEGs, in a child process whose
tree (the process and any child it starts) is sampled for anonymous memory:
the summed RssAnon the issue names, and the summed Pss_Anon. The issue's
claim is 1,200 -> 12,000 images at ``--memory-budget 512M``; a 12,000-image
run takes about two minutes on 2 cores, so this test keeps the ratios (10x
the images, the budget between the two datasets' decoded sizes: the small one
in memory, the large one memory-mapped) at 300 -> 3,000 images and 128M.
``python -m bench.scale --claim`` measures the full-size pair.
"""

from __future__ import annotations

import sys

import pytest

from bench.scale import generate, run_measured, train_argv

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

GROWTH = 1.25  # at most +25% for 10x the images


def test_peak_anonymous_memory_grows_at_most_25_percent_for_10x_the_images(tmp_path):
    peaks, logs = {}, {}
    for n in (300, 3000):
        data = generate(tmp_path / f"d{n}", n)
        # --head-solver sgd: the cross-validated L-BFGS fit's time grows with the rows, not its memory
        m = run_measured(train_argv(data, tmp_path / f"r{n}", "128M", epochs=1), timeout=300)
        assert m.returncode == 0, m.stderr[-2000:]
        peaks[n], logs[n] = (m.rss_anon, m.anon), m.stderr
    # the path each took, and why: the small dataset fits the budget, the large one is mapped
    assert "(300 at 224x224) within the memory budget of 128 MiB: in memory" in logs[300]
    assert "(3,000 at 224x224) > memory budget 128 MiB: memory-mapped at" in logs[3000]
    assert "each image decoded once" in logs[3000]
    for which, name in enumerate(("RssAnon", "Pss_Anon")):
        small, large = peaks[300][which], peaks[3000][which]
        assert large <= GROWTH * small, (
            f"peak summed {name} {small / 2**20:.0f} MiB -> {large / 2**20:.0f} MiB for 10x the images")
