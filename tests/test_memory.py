"""The one memory budget: sizes as people write them, the default, the disk check before a spill."""

from __future__ import annotations

import logging
import os
import shutil

import pytest
import torch

from tl_studio import memory
from tl_studio.errors import InputError
from tl_studio.train import TrainConfig


@pytest.mark.parametrize("text, want", [
    ("512M", 512 * 2**20), ("2G", 2 * 2**30), ("1.5GiB", 3 * 2**29), ("800MB", 800 * 10**6),
    ("300", 300 * 2**20), ("0", 0), ("64 mib", 64 * 2**20), ("1t", 2**40), ("4096k", 4 * 2**20),
])
def test_sizes_read_as_people_write_them(text, want):
    assert memory.parse_size(text) == want


@pytest.mark.parametrize("text", ["", "lots", "-1G", "2X", "1.2.3M", "G"])
def test_a_size_that_is_not_one_is_refused(text):
    with pytest.raises(ValueError, match="expected a size such as 512M"):
        memory.parse_size(text)


def test_the_default_budget_is_half_the_available_memory(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda: 8 * 2**30)
    assert memory.default_budget() == 4 * 2**30
    assert memory.resolve_budget(None) == 4 * 2**30 and memory.resolve_budget(100) == 100 * 2**20
    monkeypatch.setattr(memory, "available_bytes", lambda: None)
    assert memory.default_budget() == memory.FALLBACK_BYTES
    monkeypatch.undo()
    assert 0 < memory.available_bytes() < 2**50  # read from this machine


def test_a_spill_beyond_the_free_disk_space_is_refused_naming_the_folder_and_bytes(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    need = free + 2**30
    with pytest.raises(memory.DiskSpaceError) as err:
        memory.check_free(tmp_path / "cache", need, "the decoded images")
    text = str(err.value)
    assert isinstance(err.value, InputError) and "\n" not in text
    assert text.startswith(f"{tmp_path / 'cache'}: not enough free disk space to memory-map the decoded images")
    assert f"{need:,} bytes" in text
    memory.check_free(tmp_path, 1, "anything")  # room for a byte


def test_a_store_refuses_before_decoding_when_the_disk_is_too_small(tmp_path, monkeypatch):
    from tl_studio.data import ImageStore
    from tl_studio.registry import Preprocess

    real = memory.check_free
    monkeypatch.setattr(memory, "check_free", lambda folder, need, what, free=None: real(folder, need, what, free=10))
    with pytest.raises(memory.DiskSpaceError, match="30,720 bytes"):
        ImageStore([tmp_path / f"{i}.png" for i in range(10)], Preprocess(input_size=32, resize_size=32),
                   memory_budget_bytes=0, spill_dir=tmp_path)


def test_a_mapped_tensor_is_file_backed_and_leaves_no_file(tmp_path):
    t, path = memory.mapped_tensor(tmp_path, "x.bin", (4, 3), torch.float32, "a test")
    assert path.parent == tmp_path and not path.exists() and os.listdir(tmp_path) == []
    t[1] = 5.0
    assert t.shape == (4, 3) and t.sum() == 15.0


def test_the_budget_in_a_config(caplog):
    assert TrainConfig().memory_budget_mb is None
    assert TrainConfig(memory_budget_mb=512).memory_budget_mb == 512
    for bad in (-1, 1.5, True, 1 << 30):
        with pytest.raises(ValueError, match="memory_budget_mb: must be null"):
            TrainConfig(memory_budget_mb=bad)
    # config.json files of earlier versions name the feature cache's own budget: read, dropped, said
    with caplog.at_level(logging.INFO, logger="tl_studio.train.config"):
        cfg = TrainConfig.from_dict({"epochs": 2, "cache_budget_mb": 2048})
    assert cfg.epochs == 2 and "cache_budget_mb=2048 is no longer used" in caplog.text


def test_the_flag_error_line(tmp_path, capsys):
    from tl_studio.cli import main

    code = main(["train", str(tmp_path), "--out", str(tmp_path / "r"), "--memory-budget", "2X"])
    err = capsys.readouterr().err
    assert code == 2 and "--memory-budget: expected a size such as 512M" in err and "'2X'" in err
