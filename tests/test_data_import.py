"""Importing folders, zips and CSVs: exactly which files are kept, skipped and warned about."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.test_data_factory import files_under, image_folder, jpeg_bytes, png_bomb_bytes, write, zip_with
from tl_studio.data import Dataset, DatasetError, load_dataset


def _skipped(ds) -> dict[str, str]:
    return dict(zip(ds.summary.skipped["file"], ds.summary.skipped["reason"]))


def _kinds(ds) -> list[str]:
    return list(ds.summary.warnings["kind"])


def test_wrapped_folder_with_bad_files_and_junk(tmp_path):
    root = image_folder(tmp_path / "upload" / "mydata", {"cats": 6, "dogs": 6})
    good = jpeg_bytes(99)
    write(root / "cats" / "text.jpg", b"I am text, not a JPEG\n")
    write(root / "cats" / "cut.jpg", good[: len(good) // 2])
    write(root / "cats" / "notes.txt", b"some notes")
    write(root / "dogs" / "huge.png", png_bomb_bytes())
    write(root / "dogs" / "empty.jpg", b"")
    write(root / "dogs" / "nested" / "deep.jpg", jpeg_bytes(77))  # images below a class folder count
    write(root / "stray.jpg", jpeg_bytes(55))  # an image outside any class folder
    write(root / "README.md", b"# my data")  # not data, not an error
    # junk: ignored silently
    write(root / "cats" / ".DS_Store", b"\x00junk")
    write(root / "cats" / "._000.jpg", b"\x00\x05\x16\x07")
    write(root / "cats" / ".ipynb_checkpoints" / "x-checkpoint.jpg", jpeg_bytes(3))
    write(root / "__MACOSX" / "cats" / "._000.jpg", b"\x00\x05\x16\x07")
    write(root / "dogs" / "Thumbs.db", b"junk")
    before = files_under(tmp_path)

    ds = load_dataset(tmp_path / "upload")
    assert ds.root == root.resolve()
    assert ds.classes == ["cats", "dogs"]
    assert [it.rel for it in ds.items] == [f"cats/{i:03d}.jpg" for i in range(6)] + [
        *(f"dogs/{i:03d}.jpg" for i in range(6)),
        "dogs/nested/deep.jpg",
    ]
    assert all(it.path == root.resolve() / it.rel for it in ds.items)
    assert [it.label for it in ds.items] == [0] * 6 + [1] * 7
    skipped = _skipped(ds)
    assert set(skipped) == {
        "cats/text.jpg", "cats/cut.jpg", "cats/notes.txt", "dogs/huge.png", "dogs/empty.jpg", "stray.jpg"
    }
    assert skipped["cats/text.jpg"].startswith("not an image in an allowed format")
    assert skipped["cats/notes.txt"].startswith("not an image in an allowed format")
    assert skipped["cats/cut.jpg"].startswith("truncated image")
    assert skipped["dogs/huge.png"].startswith("pixel-count bomb")
    assert skipped["dogs/empty.jpg"] == "empty file (0 bytes)"
    assert skipped["stray.jpg"] == "not inside a class folder"
    assert ds.summary.warnings.empty
    assert files_under(tmp_path) == before  # importing a folder writes nothing


def test_one_class_dataset_fails_saying_what_was_found(tmp_path):
    image_folder(tmp_path / "d", {"cats": 4})
    write(tmp_path / "d" / "cats" / "bad.jpg", b"text")
    with pytest.raises(DatasetError) as err:
        load_dataset(tmp_path / "d")
    msg = str(err.value)
    assert "need at least two classes with usable images; found 1: 'cats' (4 images)" in msg
    assert "1 file(s) skipped (first: cats/bad.jpg: not an image" in msg


def test_no_class_folders(tmp_path):
    write(tmp_path / "d" / "a.jpg", jpeg_bytes(1))
    with pytest.raises(DatasetError, match="found no class folders; expected one sub-folder per class"):
        load_dataset(tmp_path / "d")


def test_empty_class_is_left_out_and_reported(tmp_path):
    root = image_folder(tmp_path / "d", {"cats": 5, "dogs": 5})
    (root / "birds").mkdir()
    write(root / "fish" / "broken.jpg", b"not an image")
    ds = load_dataset(root)
    assert ds.classes == ["cats", "dogs"]
    w = ds.summary.warnings
    assert list(w["kind"]) == ["empty_class", "empty_class"]
    assert list(w["message"]) == [
        "class 'birds' has no usable images and is left out",
        "class 'fish' has no usable images and is left out",
    ]
    assert _skipped(ds) == {"fish/broken.jpg": "not an image in an allowed format (JPEG, PNG, GIF, BMP, TIFF, WEBP)"}


def test_unicode_class_names(tmp_path):
    root = image_folder(tmp_path / "données", {"chat_été": 5, "猫": 5, "Ωmega dog": 5})
    ds = load_dataset(root)
    assert ds.classes == sorted(["chat_été", "猫", "Ωmega dog"])
    assert {ds.classes[it.label] for it in ds.items} == set(ds.classes)
    assert ds.items[0].rel.split("/")[0] == ds.classes[0]
    # and through a zip, whose names are stored as UTF-8
    members = [(f"export/{p.relative_to(root).as_posix()}", p.read_bytes()) for p in sorted(root.rglob("*.jpg"))]
    archive = zip_with(tmp_path / "unicode.zip", members)
    ds2 = load_dataset(archive, workdir=tmp_path / "work")
    assert ds2.classes == ds.classes
    assert [it.rel for it in ds2.items] == [it.rel for it in ds.items]
    assert ds2.fingerprint == ds.fingerprint  # same files, same labels, same bytes


def test_class_names_with_bidirectional_controls_are_refused(tmp_path):
    root = image_folder(tmp_path / "data", {"cat": 3, "invoice\u202efdp.exe": 3})
    with pytest.raises(DatasetError, match=r"class 'invoice\\u202efdp.exe': contains bidirectional control"):
        load_dataset(root)
    labels = ["dog", "c\u200fat", "dog"]
    rows = [f"data/cat/{p.name},{label}" for p, label in zip(sorted((root / "cat").iterdir()), labels)]
    write(tmp_path / "labels.csv", ("path,label\n" + "\n".join(rows) + "\n").encode())
    with pytest.raises(DatasetError, match=r"U\+200F"):
        load_dataset(tmp_path / "labels.csv")


def test_stratified_split_is_seeded_and_per_class(tmp_path):
    root = image_folder(tmp_path / "d", {"a": 10, "b": 20, "c": 1})
    ds = load_dataset(root, val_fraction=0.2, seed=0)
    val_counts = ds.summary.classes.set_index("class")["val"].to_dict()
    assert val_counts == {"a": 2, "b": 4, "c": 0}
    assert sorted(ds.train_idx + ds.val_idx) == list(range(31))
    assert not set(ds.train_idx) & set(ds.val_idx)
    assert ds.items[ds.train_idx[-1]].rel == "c/000.jpg"  # too small to split: kept for training
    assert "unsplittable" in _kinds(ds) and "few_images" in _kinds(ds)
    again = load_dataset(root, val_fraction=0.2, seed=0)
    assert again.val_idx == ds.val_idx and again.fingerprint == ds.fingerprint
    other = load_dataset(root, val_fraction=0.2, seed=1)
    assert other.val_idx != ds.val_idx
    assert other.fingerprint == ds.fingerprint  # the fingerprint is about the files, not the split


def test_fingerprint_follows_file_bytes(tmp_path):
    root = image_folder(tmp_path / "d", {"a": 3, "b": 3})
    fp = load_dataset(root).fingerprint
    assert len(fp) == 64 and fp == load_dataset(root).fingerprint
    write(root / "a" / "000.jpg", jpeg_bytes(1234))
    assert load_dataset(root).fingerprint != fp


def test_explicit_train_val_folders(tmp_path):
    root = tmp_path / "d"
    image_folder(root / "train", {"cats": 6, "dogs": 6})
    image_folder(root / "val", {"cats": 2, "dogs": 3}, seed=1)
    image_folder(root / "test", {"cats": 1, "dogs": 1}, seed=2)
    ds = load_dataset(root, val_fraction=0.5)  # the folders win over the fraction
    assert ds.summary.split == "folders"
    assert {ds.items[i].rel.split("/")[0] for i in ds.train_idx} == {"train"}
    assert {ds.items[i].rel.split("/")[0] for i in ds.val_idx} == {"val"}
    assert ds.summary.classes.set_index("class")[["train", "val"]].to_dict("index") == {
        "cats": {"train": 6, "val": 2},
        "dogs": {"train": 6, "val": 3},
    }
    assert list(zip(ds.summary.warnings["level"], _kinds(ds))) == [("warning", "ignored_folder")]


def test_duplicates_warned_with_both_names(tmp_path):
    root = image_folder(tmp_path / "d", {"big": 33, "small": 3}, size=(16, 16))
    shutil.copy(root / "big" / "000.jpg", root / "small" / "copy.jpg")
    ds = load_dataset(root)
    msgs = dict(zip(_kinds(ds), ds.summary.warnings["message"]))
    assert msgs["duplicate"] == (
        "duplicate files (same content): big/000.jpg and small/copy.jpg; they are labelled differently"
    )
    assert "imbalance" not in msgs  # 33:4 is under 10:1
    assert len(ds.items) == 37  # duplicates are reported, not dropped


def test_duplicate_across_train_and_val_folders(tmp_path):
    root = tmp_path / "d"
    image_folder(root / "train", {"a": 5, "b": 5})
    image_folder(root / "val", {"a": 2, "b": 2}, seed=1)
    shutil.copy(root / "train" / "a" / "001.jpg", root / "val" / "a" / "leak.jpg")
    ds = load_dataset(root)
    (msg,) = [m for k, m in zip(_kinds(ds), ds.summary.warnings["message"]) if k == "duplicate"]
    assert "train/a/001.jpg and val/a/leak.jpg" in msg
    assert "copies are in both training and validation" in msg


def test_imbalance_over_ten_to_one(tmp_path):
    root = image_folder(tmp_path / "d", {"big": 33, "small": 3}, size=(16, 16))
    ds = load_dataset(root)
    msgs = dict(zip(_kinds(ds), ds.summary.warnings["message"]))
    assert msgs["imbalance"].startswith("classes are imbalanced 11.0:1 ('big' has 33, 'small' has 3)")
    assert msgs["few_images"] == "class 'small' has only 3 images (fewer than 5)"


def test_csv_paths_resolve_inside_its_folder_only(tmp_path):
    root = image_folder(tmp_path / "ds", {"imgs": 6})
    secret = write(tmp_path / "outside.jpg", jpeg_bytes(42))
    os.symlink(secret, root / "imgs" / "sneaky.jpg")
    rows = ["path,label"]
    rows += [f"imgs/{i:03d}.jpg,{'cat' if i < 3 else 'dog'}" for i in range(6)]
    rows += [
        "../outside.jpg,cat",
        f"{secret},cat",
        "imgs/../../outside.jpg,dog",
        "imgs/sneaky.jpg,dog",
        "imgs/missing.jpg,dog",
        "imgs/000.jpg,dog",
        "imgs/001.jpg,",
        "just-one-column",
    ]
    csv = write(root / "labels.csv", ("\n".join(rows) + "\n").encode())
    ds = load_dataset(csv)
    assert ds.root == root.resolve()
    assert ds.classes == ["cat", "dog"]
    assert [(it.rel, ds.classes[it.label]) for it in ds.items] == [
        ("imgs/000.jpg", "cat"), ("imgs/001.jpg", "cat"), ("imgs/002.jpg", "cat"),
        ("imgs/003.jpg", "dog"), ("imgs/004.jpg", "dog"), ("imgs/005.jpg", "dog"),
    ]
    assert all(it.path.is_relative_to(root.resolve()) for it in ds.items)
    assert _skipped(ds) == {
        "../outside.jpg": "line 8: path points outside the dataset folder",
        str(secret): "line 9: absolute path; paths must be relative to the dataset folder",
        "imgs/../../outside.jpg": "line 10: path points outside the dataset folder",
        "imgs/sneaky.jpg": "line 11: path points outside the dataset folder",
        "imgs/missing.jpg": "line 12: file not found",
        "imgs/000.jpg": "line 13: listed twice with different labels ('cat', 'dog')",
        "imgs/001.jpg": "line 14: empty label",
        "labels.csv:15": "line 15: expected path,label, got 1 column(s)",
    }


def test_csv_inside_a_zip(tmp_path):
    members = [(f"pack/img/{i}.jpg", jpeg_bytes(i)) for i in range(6)]
    members.append(("pack/labels.csv", "\n".join(["file,class"] + [f"img/{i}.jpg,{'ab'[i % 2]}" for i in range(6)]).encode()))
    ds = load_dataset(zip_with(tmp_path / "csv.zip", members), workdir=tmp_path / "w")
    assert ds.classes == ["a", "b"] and len(ds.items) == 6
    assert ds.root.parent.parent == (tmp_path / "w").resolve()


def test_from_files_rebuilds_and_reports_missing(tmp_path):
    root = image_folder(tmp_path / "d", {"cats": 5, "dogs": 5})
    ds = load_dataset(root)
    saved = ds.file_lists()
    gone = ds.items[ds.val_idx[0]]
    gone.path.unlink()
    again = Dataset.from_files(**saved)
    assert again.classes == ds.classes
    assert [it.rel for it in again.items] == [it.rel for it in ds.items if it.rel != gone.rel]
    assert _skipped(again) == {gone.rel: "file not found"}
    assert {again.items[i].rel for i in again.val_idx} == {ds.items[i].rel for i in ds.val_idx} - {gone.rel}
    assert {again.items[i].rel for i in again.train_idx} == {ds.items[i].rel for i in ds.train_idx}
    # a whole class gone: the class list (the model's outputs) is kept as saved
    for it in ds.items:
        if it.label == 1 and it.path.exists():
            it.path.unlink()
    third = Dataset.from_files(**saved)
    assert third.classes == ["cats", "dogs"] and {it.label for it in third.items} == {0}
    # a tampered list cannot reach outside the root
    saved["files"].append(["../../etc/passwd", "cats"])
    assert _skipped(Dataset.from_files(**saved))["../../etc/passwd"] == "path points outside the dataset folder"


def test_bad_arguments(tmp_path):
    with pytest.raises(DatasetError, match=r"nope: no such file or folder"):
        load_dataset(tmp_path / "nope")
    write(tmp_path / "x.tar", b"tar")
    with pytest.raises(DatasetError, match=r"x\.tar: expected a folder, a \.zip or a \.csv file"):
        load_dataset(tmp_path / "x.tar")
    with pytest.raises(DatasetError, match=r"val_fraction: must be in \[0, 1\), got 1.5"):
        load_dataset(tmp_path, val_fraction=1.5)


def test_progress_is_reported(tmp_path):
    root = image_folder(tmp_path / "d", {"a": 4, "b": 4})
    seen = []
    load_dataset(root, progress=lambda f, msg: seen.append((f, msg)))
    assert len(seen) == 8 and seen[-1][0] == 1.0
    assert all(0 < f <= 1 for f, _ in seen)
