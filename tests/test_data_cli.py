"""``tl-studio data PATH``: the summary for people, JSON for scripts, exit 2 on bad input."""

from __future__ import annotations

import json

from tests.test_data_factory import image_folder, write, zip_with
from tl_studio.cli import main


def test_data_json(tmp_path, capsys):
    root = image_folder(tmp_path / "d", {"chat_été": 6, "猫": 4})
    write(root / "猫" / "bad.jpg", b"text")
    assert main(["data", str(root), "--json", "--val-fraction", "0.5", "--seed", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [c["class"] for c in out["classes"]] == ["chat_été", "猫"]
    assert [c["images"] for c in out["classes"]] == [6, 4]
    assert out["counts"] == {"images": 10, "classes": 2, "skipped": 1}
    assert out["split"] == {"kind": "random", "train": 5, "val": 5}
    assert out["skipped"] == [{"file": "猫/bad.jpg", "reason": "not an image in an allowed format (JPEG, PNG, GIF, BMP, TIFF, WEBP)"}]
    assert [w["kind"] for w in out["warnings"]] == ["few_images"]
    assert len(out["fingerprint"]) == 64


def test_data_tables_from_a_zip(tmp_path, capsys):
    root = image_folder(tmp_path / "d", {"a": 3, "b": 3})
    members = [(f"pack/{p.relative_to(root).as_posix()}", p.read_bytes()) for p in sorted(root.rglob("*.jpg"))]
    archive = zip_with(tmp_path / "pack.zip", members + [("../evil.txt", b"x")])
    assert main(["data", str(archive)]) == 0
    out = capsys.readouterr().out
    assert "6 images in 2 classes; split (random): 4 train, 2 val; 1 skipped" in out
    assert "pack.zip:../evil.txt" in out and "path escapes the archive" in out
    assert not (tmp_path / "evil.txt").exists()


def test_bad_input_exits_2_with_one_line(tmp_path, capsys):
    image_folder(tmp_path / "one", {"only": 3})
    assert main(["data", str(tmp_path / "one")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("tl-studio data: error: ") and "found 1: 'only' (3 images)" in err
    assert main(["data", str(tmp_path / "missing")]) == 2
    assert "missing: no such file or folder" in capsys.readouterr().err


def test_the_import_progress_counts_files_and_files_per_second(monkeypatch):
    import time

    from tl_studio.cli import data as data_cmd

    monkeypatch.setattr(data_cmd, "QUIET_SECONDS", 0.0)
    events = []
    progress = data_cmd.files_meter(events.append)
    for i in range(1, 5):  # what check_many reports: the fraction done after each file
        time.sleep(0.01)
        progress(i / 4, "checking images")
    assert [(e.phase, e.done, e.total, e.unit) for e in events] == [("checking images", i, 4, "files")
                                                                     for i in range(1, 5)]
    assert events[0].rate is None and events[-1].rate > 0  # files/s, counted from the first file
    progress(1 / 2, "extracting a/b.jpg")  # a zip's members: another phase, not the feature pass
    assert (events[-1].phase, events[-1].done, events[-1].total) == ("unzipping", 1, 2)
