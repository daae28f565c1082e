"""Per-class uploads: names checked, every file validated before it is copied, real threads."""

from __future__ import annotations

import threading

import pytest

from tests.test_data_factory import files_under, jpeg_bytes, png_bomb_bytes, write
from tl_studio.data import DatasetBuilder, DatasetError


def _uploads(tmp_path, n, seed=0, prefix="img"):
    return [write(tmp_path / "uploads" / f"{prefix}{seed + i}.jpg", jpeg_bytes(seed + i)) for i in range(n)]


def test_classes_add_rename_remove(tmp_path):
    b = DatasetBuilder(tmp_path / "ws")
    assert b.add_class(" 猫 ") == "猫"
    b.add_class("chat_été")
    assert b.classes == ["chat_été", "猫"]
    with pytest.raises(DatasetError, match="class name 'CHAT_ÉTÉ': class 'chat_été' already exists"):
        b.add_class("CHAT_ÉTÉ")
    for bad, why in [("", "empty"), ("../x", "must not contain '/'"), ("a\\b", "must not contain"),
                     (".hidden", "reserved"), ("__MACOSX", "reserved"), ("..", "reserved"), ("x" * 101, "longer than 100"),
                     ("cat\u202egnp.exe", "bidirectional control character.*U\\+202E"),
                     ("\u2066dog\u2069", "U\\+2066, U\\+2069")]:
        with pytest.raises(DatasetError, match=why):
            b.add_class(bad)
    assert b.rename_class("猫", "cat") == "cat"
    assert b.classes == ["cat", "chat_été"]
    b.remove_class("cat")
    assert b.classes == ["chat_été"]
    with pytest.raises(DatasetError, match="class 'cat': no such class; classes: 'chat_été'"):
        b.remove_class("cat")
    assert files_under(tmp_path / "ws") == {"chat_été"}


def test_uploads_are_checked_before_they_are_copied(tmp_path):
    b = DatasetBuilder(tmp_path / "ws")
    b.add_class("cats")
    good = _uploads(tmp_path, 3)
    bad = [
        write(tmp_path / "uploads" / "text.jpg", b"hello, I am text"),
        write(tmp_path / "uploads" / "bomb.png", png_bomb_bytes()),
        write(tmp_path / "uploads" / "cut.jpg", jpeg_bytes(50)[:300]),
        write(tmp_path / "uploads" / "._hidden.jpg", jpeg_bytes(60)),  # a good image under a hidden name
    ]
    again = write(tmp_path / "uploads" / "again.jpg", good[0].read_bytes())
    before = files_under(tmp_path)
    report = b.add_images("cats", good + bad + [again])
    assert report.kept == ["img0.jpg", "img1.jpg", "img2.jpg", "_hidden.jpg"]
    reasons = dict(report.skipped)
    assert set(reasons) == {"text.jpg", "bomb.png", "cut.jpg", "again.jpg"}
    assert reasons["text.jpg"].startswith("not an image")
    assert reasons["bomb.png"].startswith("pixel-count bomb")
    assert reasons["cut.jpg"].startswith("truncated image")
    assert reasons["again.jpg"] == "the same image is already in class 'cats' as img0.jpg"
    new = files_under(tmp_path) - before
    assert new == {f"ws/cats/{n}" for n in report.kept}  # nothing else written, no temp files left
    # a second upload of the same name gets a new name
    second = b.add_images("cats", [write(tmp_path / "later" / "img0.jpg", jpeg_bytes(70))])
    assert second.kept == ["img0-1.jpg"] and b.counts() == {"cats": 5}
    with pytest.raises(DatasetError, match="class 'dogs': no such class"):
        b.add_images("dogs", good)


def test_dataset_from_uploads(tmp_path):
    b = DatasetBuilder(tmp_path / "ws")
    for name in ("train", "val", "empty"):  # names that would mean a split in an uploaded folder
        b.add_class(name)
    b.add_images("train", _uploads(tmp_path, 6, 0))
    b.add_images("val", _uploads(tmp_path, 6, 10))
    ds = b.dataset(val_fraction=0.5, seed=1)
    assert ds.classes == ["train", "val"]
    assert len(ds.items) == 12 and len(ds.val_idx) == 6
    assert ds.summary.split == "random"
    assert list(ds.summary.warnings["kind"]) == ["empty_class"]
    b.remove_class("val")
    with pytest.raises(DatasetError, match="uploaded classes: need at least two classes with usable images; found 1: 'train' \\(6 images\\)"):
        b.dataset()


def test_concurrent_uploads_lose_nothing(tmp_path):
    b = DatasetBuilder(tmp_path / "ws")
    b.add_class("a")
    # two browser tabs upload different images with the same file names at the same time
    batches = [
        [write(tmp_path / f"tab{t}" / f"photo{i}.jpg", jpeg_bytes(100 * t + i)) for i in range(8)] for t in range(2)
    ]
    reports = [None, None]

    def upload(t):
        reports[t] = b.add_images("a", batches[t])

    threads = [threading.Thread(target=upload, args=(t,)) for t in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    kept = reports[0].kept + reports[1].kept
    assert len(kept) == 16 and len(set(kept)) == 16
    assert b.counts() == {"a": 16}
