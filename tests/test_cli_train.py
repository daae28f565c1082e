"""The CLI contract: train, predict, export, with one-line errors."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from .conftest import DATA
from .trainkit import DEMO

ENV = {**os.environ, "TL_STUDIO_OFFLINE": "1"}


def tl(*args, check=True):
    proc = subprocess.run(
        [sys.executable, "-m", "tl_studio", *map(str, args)], capture_output=True, text=True, env=ENV, timeout=600,
        umask=0o022,  # the usual one: created files must come out 0644
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_train_predict_export(tmp_path):
    run = tmp_path / "run"
    proc = tl("train", DEMO, "--model", "efficientnet_lite0", "--epochs", "2", "--out", run, "--plan", "head",
              "--head-solver", "sgd", "--json")
    summary = json.loads(proc.stdout)
    for key in ("best_val_accuracy", "best_epoch", "epochs_run", "train_seconds", "images_per_second", "device"):
        assert key in summary
    assert summary["epochs_run"] == 2 and summary["best_val_accuracy"] > 0.5
    # In a pipe, progress comes as plain lines (no carriage-return bar).
    assert "epoch 2/2" in proc.stderr and "\r" not in proc.stderr
    out = json.loads(tl("predict", DATA / "coffee.jpg", "--run", run, "--top-k", "2", "--json").stdout)
    assert out[0]["image"].endswith("coffee.jpg") and len(out[0]["predictions"]) == 2
    assert set(out[0]["predictions"][0]) == {"label", "probability"}
    exported = json.loads(tl("export", run, "--format", "pt2", "--json").stdout)
    path = exported["path"]
    assert os.path.exists(path) and path.endswith("model.pt2") and os.path.exists(exported["metadata"])
    # Written atomically (temporary file, then rename), yet with the mode the umask gives: 0644.
    for f in (path, run / "config.json", run / "model.safetensors", run / "metrics.csv"):
        assert stat.S_IMODE(os.stat(f).st_mode) == 0o644, f
    # A second train into the same directory is refused unless resuming.
    again = tl("train", DEMO, "--epochs", "1", "--out", run, "--plan", "head", check=False)
    assert again.returncode == 2 and "already holds a run" in again.stderr


def test_predict_with_the_base_model_head():
    out = json.loads(tl("predict", DATA / "coffee.jpg", DATA / "chelsea_cat.jpg", "--model", "efficientnet_lite0", "--json").stdout)
    assert out[0]["predictions"][0]["label"] == "espresso"
    assert len(out) == 2 and len(out[1]["predictions"]) == 5


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "/nonexistent/data", "--epochs", "1", "--out", "{tmp}/r"], "/nonexistent/data"),
        (["train", str(DEMO), "--epochs", "0", "--out", "{tmp}/r", "--plan", "head"], "--epochs: must be a positive integer"),
        (["train", str(DEMO), "--model", "nope", "--out", "{tmp}/r"], "unknown model 'nope'"),
        (["train", str(DEMO), "--out", "{tmp}/r", "--plan", "{tmp}/missing.json"], "cannot read"),
        (["train", str(DEMO), "--out", "{tmp}/r", "--device", "cuda", "--plan", "head"], "no CUDA GPU"),
        (["predict", str(DATA / "LICENSE.md"), "--model", "efficientnet_lite0"], "LICENSE.md"),
        (["predict", str(DATA / "coffee.jpg"), "--run", "{tmp}"], "config.json"),
        (["export", "{tmp}", "--format", "onnx"], "config.json"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, args, message, capsys):
    """In-process (the same main() the console script runs; one subprocess test above covers the exit path)."""
    from tl_studio.cli import main

    if "--device" in args and "cuda" in args:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
    status = main([a.replace("{tmp}", str(tmp_path)) for a in args])
    err = capsys.readouterr().err
    assert status == 2, err
    lines = [ln for ln in err.strip().splitlines() if "error:" in ln]
    assert len(lines) == 1 and message in lines[0], err
