"""Run files: atomic writes, checkpoints that are never trusted, and each run's status."""

from __future__ import annotations

import json
import os
import pickle
import threading

import pytest
import torch

from tl_studio.atomic import write_json
from tl_studio.runs import (
    CONFIG,
    SUMMARY,
    RunError,
    hold,
    is_running,
    load_last,
    load_weights,
    plan_sha256,
    save_last,
    save_weights,
    status,
    writing,
)


def test_no_partial_file_is_ever_readable(tmp_path):
    """A reader polling while a writer rewrites big files only ever sees whole files."""
    path = tmp_path / "model.safetensors"
    save_weights(path, {"w": torch.zeros(256, 1024)}, {"n": "0"})
    stop = threading.Event()
    errors: list[str] = []
    reads = [0]

    def reader():
        while not stop.is_set():
            try:
                state, meta = load_weights(path)
            except RunError as exc:  # a half-written file would land here
                errors.append(str(exc))
                continue
            n = int(meta["n"])
            if not torch.equal(state["w"], torch.full((256, 1024), float(n))):
                errors.append(f"version {n}: content does not match its metadata")
            reads[0] += 1

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for n in range(1, 40):
        save_weights(path, {"w": torch.full((256, 1024), float(n))}, {"n": str(n)})
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert reads[0] > 0
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # no temp files left


def test_failed_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "summary.json"
    write_json(path, {"ok": 1})

    class Unserialisable:
        def __str__(self):
            raise RuntimeError("cannot serialise")

    with pytest.raises(RuntimeError):
        write_json(path, {"bad": Unserialisable()})
    assert path.read_text().strip().startswith("{") and '"ok": 1' in path.read_text()
    assert len(list(tmp_path.iterdir())) == 1


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_checkpoint_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "last.pt"
    with open(ckpt, "wb") as fh:
        pickle.dump({"model": _Exploit(marker)}, fh)
    with pytest.raises(RunError, match="refused to load"):
        load_last(ckpt)
    assert not marker.exists()
    # The same trick inside torch.save's zip format is refused too.
    torch.save({"model": _Exploit(marker)}, ckpt)
    with pytest.raises(RunError, match="refused to load"):
        load_last(ckpt)
    assert not marker.exists()


def test_pickle_posing_as_safetensors_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    fake = tmp_path / "model.safetensors"
    with open(fake, "wb") as fh:
        pickle.dump(_Exploit(marker), fh)
    with pytest.raises(RunError, match="not a valid safetensors file"):
        load_weights(fake)
    assert not marker.exists()


def test_plain_checkpoint_round_trips(tmp_path):
    payload = {"model": {"w": torch.randn(3)}, "epoch": 2, "best": {"epoch": 1, "val_accuracy": 0.5}}
    save_last(tmp_path / "last.pt", payload)
    back = load_last(tmp_path / "last.pt")
    assert back["epoch"] == 2 and torch.equal(back["model"]["w"], payload["model"]["w"])


def test_nan_weights_are_never_saved(tmp_path):
    with pytest.raises(RunError, match="non-finite"):
        save_weights(tmp_path / "model.safetensors", {"w": torch.tensor([1.0, float("nan")])}, {})
    assert not (tmp_path / "model.safetensors").exists()


# ---- a run's status ------------------------------------------------------------------------
def _run_with(tmp_path, name, summary):
    run = tmp_path / name
    run.mkdir()
    write_json(run / CONFIG, {"plan": {}})
    if summary is not None:
        (run / SUMMARY).write_text(summary if isinstance(summary, str) else json.dumps(summary))
    return run


@pytest.mark.parametrize(
    "summary, expected",
    [
        ({"status": "finished"}, "finished"),
        ({"status": "stopped"}, "stopped"),
        ({"status": "failed", "error": "NonFiniteLoss: ..."}, "failed"),
        (None, "crashed"),  # no summary and nobody writing it: its writer was killed
        ("{half", "crashed"),
        ({"status": "something else"}, "crashed"),
    ],
)
def test_status_reads_the_summary(tmp_path, summary, expected):
    assert status(_run_with(tmp_path, "r", summary)) == expected


def test_a_run_held_in_this_process_is_running_until_every_hold_is_released(tmp_path):
    run = _run_with(tmp_path, "r", {"status": "finished"})  # a finished run being resumed
    release = hold(run)
    with writing(tmp_path / "." / "r"):  # the same folder by another spelling
        assert status(run) == "running" and is_running(run)
    assert status(run) == "running"
    release()
    release()  # a second release changes nothing
    assert status(run) == "finished" and not is_running(run)


def test_plan_hash_is_canonical():
    a = {"model": "m", "layers": {"b": "train", "a": "frozen"}, "head": {"num_classes": 3}}
    b = {"head": {"num_classes": 3}, "layers": {"a": "frozen", "b": "train"}, "model": "m"}
    assert plan_sha256(a) == plan_sha256(b)
    assert plan_sha256(a) != plan_sha256({**a, "model": "n"})


def test_a_run_this_version_cannot_read_names_the_version_that_made_it(tmp_path, lite0_run):
    import shutil

    from tl_studio.runs import load_run

    # A run written before run.lock existed (none of its files changed) loads as it is.
    old = tmp_path / "old"
    shutil.copytree(lite0_run[0], old)
    assert load_run(old).plan == lite0_run[1].plan and status(old) == "finished"
    config = json.loads((old / CONFIG).read_text())
    config["plan"]["head"]["shape"] = "conv"  # a field some other version wrote
    config["versions"]["tl_studio"] = "0.1.0"
    (old / CONFIG).write_text(json.dumps(config))
    with pytest.raises(RunError) as info:
        load_run(old)
    message = str(info.value)
    assert "\n" not in message and "config.json" in message and "made by tl_studio 0.1.0" in message
