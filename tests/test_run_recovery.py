"""A run survives ``kill -9`` at any moment: ``--resume`` finishes it, and nothing temporary is left.

Real ``tl-studio train`` processes, killed with a real SIGKILL at the moment
named, on a small copy of the demo data (two classes, a head-only plan: the
feature cache makes the epochs cheap, so most of the time is start-up). What
follows a kill runs in this process, through the same ``main()`` as the
console script, to spare a start-up each.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from tl_studio import runs
from tl_studio.runs.lock import RunLock, read_lock

from .trainkit import DEMO

ENV = {**os.environ, "TL_STUDIO_OFFLINE": "1"}
EPOCHS = "3"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    for cls in ("brick", "grass"):
        (root / cls).mkdir()
        for i in range(6):
            shutil.copy(DEMO / "train" / cls / f"{cls}_{i:02d}.jpg", root / cls)
    return root


def _args(data, out, *extra):
    # Epochs on the head (not a fitted head): the kills land between and inside epochs and checkpoints.
    return [sys.executable, "-m", "tl_studio", "train", str(data), "--plan", "head", "--head-solver", "sgd", "--epochs", EPOCHS,
            "--batch-size", "4", "--out", str(out), "--json", *extra]


def _tl(*args, preexec_fn=None):
    return subprocess.run(list(args), capture_output=True, text=True, env=ENV, timeout=300, preexec_fn=preexec_fn)


def _main(capsys, data, out, *extra) -> tuple[int, str, str]:
    """``tl-studio train`` in this process: (exit status, stdout, stderr)."""
    from tl_studio.cli import main

    capsys.readouterr()
    code = main(_args(data, out, *extra)[3:])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _temp_files(out):
    return sorted(n for n in os.listdir(out) if runs.is_temp(n))


def _metrics_rows(out) -> int:
    try:
        return max(0, len((out / runs.METRICS).read_text().strip().splitlines()) - 1)
    except OSError:
        return 0


MOMENTS = {
    "config.json written": lambda out: (out / runs.CONFIG).exists(),
    "first metrics row": lambda out: _metrics_rows(out) >= 1,
    "last.pt being written": lambda out: any(n.startswith(".last.") for n in _temp_files(out)),
}


def _kill_at(data, out, moment) -> bool:
    """Start training into ``out`` and SIGKILL it the moment ``moment(out)`` holds; whether it did."""
    proc = subprocess.Popen(_args(data, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    hit = False
    try:
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline:
            if out.is_dir() and moment(out):
                os.kill(proc.pid, signal.SIGKILL)
                hit = True
                break
            time.sleep(0.001)
    finally:
        if proc.poll() is None and not hit:
            proc.kill()
        proc.wait(60)
    return hit and proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize("moment", list(MOMENTS))
def test_kill_9_at_any_moment_then_resume_finishes(tiny, tmp_path, moment, capsys, caplog):
    # A temporary file lives for milliseconds: if the kill lands just after the
    # rename, that attempt shows another moment; try again in a fresh folder.
    for attempt in range(6):
        out = tmp_path / f"run{attempt}"
        if _kill_at(tiny, out, MOMENTS[moment]) and MOMENTS[moment](out):
            break
    else:
        pytest.fail(f"could not kill the run at the moment {moment!r} in 6 attempts")
    assert runs.status(out) == "crashed"  # its lock is left, and its writer is gone
    assert read_lock(out) is not None
    if moment == "last.pt being written":
        assert _temp_files(out), "the kill landed mid-write: its temporary file is left"
    had_last = (out / runs.LAST).exists()

    with caplog.at_level(logging.INFO):
        code, stdout, stderr = _main(capsys, tiny, out, "--resume")
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["status"] == "finished" and summary["epochs_run"] == int(EPOCHS)
    if not had_last:  # nothing to resume from: it says it starts over
        assert "no last.pt to resume from; starting" in caplog.text
    assert _temp_files(out) == [] and read_lock(out) is None
    assert runs.status(out) == "finished"
    epochs = runs.read_tables(out)["epochs"]
    assert list(epochs["epoch"]) == [1, 2, 3]


def test_runs_lists_crashed_apart_and_overwrite_starts_over(tiny, tmp_path, capsys):
    from tl_studio.cli import main

    out = tmp_path / "runs" / "killed"
    assert _kill_at(tiny, out, MOMENTS["config.json written"])
    (out / ".metrics.abc123.tmp.csv").write_text("half a table")  # what a killed write leaves
    capsys.readouterr()
    assert main(["runs", "--runs-dir", str(tmp_path / "runs"), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(r["run"], r["status"]) for r in listed] == [("killed", "crashed")]

    code, _, stderr = _main(capsys, tiny, out)
    assert code == 2 and "--resume" in stderr and "--overwrite" in stderr
    (out / "notes.txt").write_text("mine")  # not a run file: --overwrite leaves it
    code, stdout, stderr = _main(capsys, tiny, out, "--overwrite")
    assert code == 0, stderr
    assert json.loads(stdout)["status"] == "finished"
    assert (out / "notes.txt").read_text() == "mine" and _temp_files(out) == []


def test_a_run_another_live_process_writes_is_refused_and_left_alone(tiny, tmp_path, capsys):
    out = tmp_path / "busy"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from tl_studio.runs.lock import RunLock; "
         f"RunLock({str(out)!r}).acquire(); print('held', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True, env=ENV,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        (out / runs.CONFIG).write_text("{}")
        (out / ".last.x1.tmp.pt").write_bytes(b"being written")
        assert runs.status(out) == "running"
        for flag in ("--resume", "--overwrite"):
            code, _, stderr = _main(capsys, tiny, out, flag)
            assert code == 2 and "another process is writing this run" in stderr
        with pytest.raises(runs.RunLocked, match=f"process {holder.pid}"):
            RunLock(out).acquire()
        assert (out / ".last.x1.tmp.pt").exists()  # a live writer's temporary file is its own
    finally:
        holder.kill()
        holder.wait(30)
    # Its writer gone, the lock is dead: the next writer takes over and cleans up.
    assert runs.status(out) == "crashed"
    with RunLock(out):
        assert _temp_files(out) == []
        assert read_lock(out)["pid"] == os.getpid()
    assert read_lock(out) is None


def _no_bigger_files_than(limit: int):
    def limit_writes():
        # Writes past the limit fail with EFBIG, as a full disk fails with ENOSPC.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return limit_writes


def test_a_write_that_fails_names_the_file_in_one_line_and_the_run_says_failed(tiny, tmp_path):
    out = tmp_path / "full"
    proc = _tl(*_args(tiny, out), preexec_fn=_no_bigger_files_than(1 << 20))  # the weights need 13 MB
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and f"{out / runs.WEIGHTS}: cannot write (File too large)" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    summary = json.loads((out / runs.SUMMARY).read_text())
    assert summary["status"] == "failed" and runs.WEIGHTS in summary["error"]
    assert runs.status(out) == "failed" and _temp_files(out) == [] and read_lock(out) is None


def test_resume_without_last_pt_starts_over_from_the_saved_weights(tiny, tmp_path, capsys, caplog):
    from tl_studio.data import load_dataset
    from tl_studio.train import TrainConfig, Trainer, data_from_dataset

    out = tmp_path / "no-last"
    code, _, stderr = _main(capsys, tiny, out)
    assert code == 0, stderr
    (out / runs.LAST).unlink()  # as a kill between the first checkpoint's weights and its last.pt leaves it
    saved, _ = runs.load_weights(out / runs.WEIGHTS)
    info = runs.load_run(out)
    seen = {}

    def first_batch(trainer, event, _info):
        if event == "batch" and not seen:
            seen.update({k: v.detach().cpu().clone() for k, v in trainer.model.state_dict().items()})

    data = data_from_dataset(load_dataset(tiny, seed=info.config["seed"]), info.plan.model)
    trainer = Trainer(info.plan, TrainConfig.from_dict(info.config["train"]), data, run_dir=out, resume=True,
                      callbacks=[first_batch])
    with caplog.at_level(logging.INFO):
        result = trainer.fit()
    assert "no last.pt to resume from; starting over from model.safetensors" in caplog.text
    assert result.status == "finished" and result.epochs_run == int(EPOCHS)
    for name, tensor in saved.items():  # it started from the saved weights, not from the pretrained ones
        torch.testing.assert_close(seen[name], tensor)
