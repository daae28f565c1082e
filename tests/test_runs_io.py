"""Run files: atomic writes, and checkpoints that are never trusted."""

from __future__ import annotations

import os
import pickle
import threading

import pytest
import torch

from tl_studio.atomic import write_json
from tl_studio.train.rundir import RunError, load_last, load_weights, save_last, save_weights


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
