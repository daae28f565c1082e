"""The benchmark generators (bench/glyphs.py, bench/photos.py): deterministic, the layout the importer reads.

Tiny sizes only; nothing here measures accuracy (that is bench/evidence.py's job).
"""

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench import glyphs, photos

SPEC = glyphs.Spec(chars="aex", train=3, val=2, size=20, seed=7)


def _digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.png"))}


def test_glyphs_layout_counts_and_valid_images(tmp_path):
    m = glyphs.generate(tmp_path, SPEC)
    assert m["classes"] == ["lower_a", "lower_e", "lower_x"]
    for split, n in (("train", 3), ("val", 2)):
        assert sorted(p.name for p in (tmp_path / split).iterdir()) == m["classes"]
        for c in m["classes"]:
            files = sorted((tmp_path / split / c).glob("*.png"))
            assert len(files) == n
            for f in files:
                with Image.open(f) as im:
                    im.load()
                    assert im.format == "PNG" and im.size == (20, 20) and im.mode == "L"
                    assert np.asarray(im).std() > 0  # something is drawn
    assert (tmp_path / "glyphs.json").is_file()


def test_glyphs_deterministic_for_a_seed(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    glyphs.generate(a, SPEC)
    glyphs.generate(b, SPEC)
    glyphs.generate(c, glyphs.Spec(chars="aex", train=3, val=2, size=20, seed=8))
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)


def test_glyphs_train_images_do_not_depend_on_val_count(tmp_path):
    glyphs.generate(tmp_path / "a", SPEC)
    glyphs.generate(tmp_path / "b", glyphs.Spec(chars="aex", train=3, val=5, size=20, seed=7))
    da, db = _digest(tmp_path / "a"), _digest(tmp_path / "b")
    assert {k: v for k, v in da.items() if k.startswith("train/")} == {
        k: v for k, v in db.items() if k.startswith("train/")}


def test_glyphs_refuses_to_overwrite_without_asking(tmp_path):
    glyphs.generate(tmp_path, SPEC)
    with pytest.raises(FileExistsError):
        glyphs.generate(tmp_path, SPEC)
    glyphs.generate(tmp_path, SPEC, overwrite=True)


def test_glyphs_difficulty_knobs():
    clean = glyphs.Knobs.at(0.0)
    assert clean.rotation == 0 and clean.noise == 0 and clean.clutter == 0 and clean.lowres == 1.0
    assert glyphs.Knobs.at(1.0) == glyphs.Knobs()
    assert glyphs.Knobs.at(1.0, rotation=5.0).rotation == 5.0
    with pytest.raises(ValueError):
        glyphs.Knobs.at(-1)
    with pytest.raises(ValueError):
        glyphs.Spec(chars="aa")


def test_glyphs_cli_and_the_engine_reads_the_folder(tmp_path):
    from tl_studio.data import load_dataset

    assert glyphs.main([str(tmp_path), "--chars", "ab", "--train", "2", "--val", "1", "--size", "16",
                        "--difficulty", "0.5", "--noise", "0"]) == 0
    ds = load_dataset(tmp_path)
    assert ds.classes == ["lower_a", "lower_b"]
    assert len(ds.train_idx) == 4 and len(ds.val_idx) == 2


def test_photos_layout_and_deterministic(tmp_path):
    spec = photos.Spec(photos=("chelsea", "coffee"), train=2, val=1, size=24, seed=3)
    m = photos.generate(tmp_path / "a", spec)
    photos.generate(tmp_path / "b", spec)
    assert m["classes"] == ["chelsea", "coffee"]
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    for split, n in (("train", 2), ("val", 1)):
        for c in m["classes"]:
            files = sorted((tmp_path / "a" / split / c).glob("*.png"))
            assert len(files) == n
            with Image.open(files[0]) as im:
                assert im.size == (24, 24) and im.mode == "RGB"
