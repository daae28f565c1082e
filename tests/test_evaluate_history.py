"""Run history on real run directories: the table, comparing runs, deleting safely, the CLI."""

from __future__ import annotations

import json
import os
import threading

import pytest
from matplotlib.figure import Figure

from tl_studio.cli import main
from tl_studio.evaluate import compare_runs_figure, delete_run, plan_summary, runs_table
from tl_studio.evaluate.history import COLUMNS
from tl_studio.plan import HeadSpec, Plan
from tl_studio.train import REGISTRY, Job
from tl_studio.runs import RunError

from .test_evaluate_run import copy_run


def _set(run, **config):
    cfg = json.loads((run / "config.json").read_text())
    cfg.update(config)
    (run / "config.json").write_text(json.dumps(cfg))


@pytest.fixture
def runs(lite0_run, tmp_path):
    """runs/ with a finished run, a nested workspace run, an interrupted one and a broken one."""
    root = tmp_path / "runs"
    src = lite0_run[0]
    old = copy_run(src, root / "old")
    _set(old, created="2025-01-01T10:00:00+0000")
    new = copy_run(src, root / "ws1" / "new")
    _set(new, created="2025-03-01T10:00:00+0000")
    cut = copy_run(src, root / "ws1" / "cut")
    plan = Plan("efficientnet_lite0", HeadSpec(4, hidden=64), default="frozen", cut_after="blocks.14",
                layers={"blocks.14": "train"})
    _set(cut, created="2025-02-01T10:00:00+0000", plan=plan.to_dict())
    (cut / "summary.json").unlink()  # interrupted: no summary, but metrics.csv
    broken = root / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    (root / ".hidden" / "x").mkdir(parents=True)
    (root / ".hidden" / "x" / "config.json").write_text("{}")
    (old / "evaluation").mkdir()  # a run's own sub-folders are not runs
    (old / "evaluation" / "config.json").write_text("{}")
    # no readable date: sorted by the folder's modification time (2025-02-15)
    os.utime(broken, (1739613600, 1739613600))
    return root


def test_runs_table_lists_every_run_newest_first(runs, lite0_run):
    df = runs_table(runs)
    assert list(df.columns) == COLUMNS
    assert df["run"].tolist() == ["ws1/new", "broken", "ws1/cut", "old"]
    new = df.set_index("run").loc["ws1/new"]
    summary = json.loads((lite0_run[0] / "summary.json").read_text())
    assert new["model"] == "efficientnet_lite0" and new["status"] == "finished"
    assert new["epochs"] == 4 and new["best_val_accuracy"] == summary["best_val_accuracy"]
    assert new["plan"] == "frozen 18/18, head 1xFC" and new["date"] == "2025-03-01 10:00"
    assert new["path"] == str((runs / "ws1" / "new").resolve())
    cut = df.set_index("run").loc["ws1/cut"]
    assert cut["status"] == "crashed" and cut["epochs"] == 4  # read from metrics.csv
    assert cut["plan"] == "frozen 15/16, cut after blocks.14, head 2xFC (hidden 64)"
    broken = df.set_index("run").loc["broken"]
    assert broken["status"].startswith("unreadable:") and "config.json" in broken["status"]
    assert runs_table(runs / "nowhere").empty


def test_plan_summary_names_taps_and_schedule():
    plan = Plan.head_only("efficientnet_lite0", 4, taps=["blocks.5", "blocks.10", "blocks.14"], unfreeze_all_at=3)
    assert plan_summary(plan) == "frozen 16/16, cut after blocks.14, taps 3, head 1xFC, unfreeze all at epoch 3"
    assert plan_summary(Plan.full("resnet18", 3)) == "frozen 0/9, head 1xFC"
    assert plan_summary(Plan.head_only("resnet18", 3, cut_after="nope")).startswith("invalid plan: cut_after")


def test_compare_runs_figure_overlays_one_colour_per_run(runs):
    fig = compare_runs_figure([runs / "old", runs / "ws1" / "new", runs / "broken"])
    assert isinstance(fig, Figure)
    acc, loss = fig.axes
    labels = [line.get_label() for line in acc.lines]
    assert labels == ["old", "new", "broken (no metrics)"]
    colours = [line.get_color() for line in acc.lines]
    assert len(set(colours)) == 3
    assert len(acc.lines[0].get_xdata()) == 4 and len(loss.lines) == 4  # val and train loss per run with metrics
    assert isinstance(compare_runs_figure([]), Figure)


def test_delete_run_refuses_everything_but_a_run_inside_the_runs_folder(runs, tmp_path):
    outside = copy_run(runs / "old", tmp_path / "elsewhere")
    for bad, why in [
        (outside, "not a run directory inside"),
        (runs, "not a run directory inside"),
        ("../elsewhere", "not a run directory inside"),
        ("ws1", "no config.json"),
        (runs / "missing", "not a run directory inside"),
    ]:
        with pytest.raises(RunError, match=why):
            delete_run(bad, runs_dir=runs)
    os.symlink(outside, runs / "link")
    with pytest.raises(RunError, match="symbolic link"):
        delete_run(runs / "link", runs_dir=runs)
    with pytest.raises(RunError, match="symbolic link"):
        delete_run("link", runs_dir=runs)
    assert outside.is_dir() and (outside / "model.safetensors").is_file()

    delete_run("ws1/new", runs_dir=runs)  # the table's "run" column
    delete_run(str(runs / "old"), runs_dir=runs)  # the table's "path" column
    assert not (runs / "ws1" / "new").exists() and not (runs / "old").exists()
    assert (runs / "ws1" / "cut").is_dir() and (runs / "broken").is_dir()
    assert runs_table(runs)["run"].tolist() == ["broken", "ws1/cut"]  # a link is never listed


def test_a_run_whose_job_is_still_active_is_not_deleted(runs):
    release = threading.Event()
    job = Job(lambda j: release.wait(30), device_key="test-evaluate-history", label="holder")
    job.run_dir = runs / "ws1" / "cut"
    REGISTRY.submit(job)
    try:
        row = runs_table(runs).set_index("run").loc["ws1/cut"]
        assert row["status"] == "running"
        with pytest.raises(RunError, match="still running"):
            delete_run(runs / "ws1" / "cut", runs_dir=runs)
    finally:
        release.set()
        assert job.wait(30)
    delete_run(runs / "ws1" / "cut", runs_dir=runs)
    assert not (runs / "ws1" / "cut").exists()


def test_cli_runs_prints_the_table_and_json(runs, tmp_path, capsys):
    assert main(["runs", "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr().out
    assert "ws1/new" in out and "frozen 18/18, head 1xFC" in out and "unreadable" in out
    assert main(["runs", "--runs-dir", str(runs), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["run"] for r in rows] == ["ws1/new", "broken", "ws1/cut", "old"]
    assert main(["runs", "--runs-dir", str(tmp_path / "none")]) == 2
    assert "no such runs folder" in capsys.readouterr().err

