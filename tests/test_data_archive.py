"""Safe zip extraction: traversal in every form, links, bombs, and the rest still extracts."""

from __future__ import annotations

import zipfile

import pytest

from tests.test_data_factory import files_under, jpeg_bytes, zip_with
from tl_studio.data import DatasetError, ZipLimits, load_dataset, safe_extract

GOOD = [("data/cats/a.jpg", jpeg_bytes(1)), ("data/dogs/b.jpg", jpeg_bytes(2))]


@pytest.mark.parametrize(
    "name, reason",
    [
        ("../evil.jpg", "path escapes the archive"),
        ("data/cats/../../../evil.jpg", "path escapes the archive"),
        ("..\\..\\evil.jpg", "path escapes the archive"),
        ("data\\..\\..\\evil.jpg", "path escapes the archive"),
        ("C:/evil.jpg", "drive letter"),
        ("C:\\Windows\\evil.jpg", "drive letter"),
        ("c:evil.jpg", "drive letter"),
        ("/ABSOLUTE/evil.jpg", "absolute path"),
        ("//server/share/evil.jpg", "absolute path"),
    ],
)
def test_zip_slip_member_is_rejected_and_the_rest_extracts(tmp_path, name, reason):
    if name.startswith("/ABSOLUTE"):
        name = f"{tmp_path}/outside/evil.jpg"  # where a naive extractor would write
    archive = zip_with(tmp_path / "in" / "upload.zip", GOOD + [(name, b"pwned")])
    before = files_under(tmp_path)
    dest = tmp_path / "work" / "ds"
    report = safe_extract(archive, dest)

    assert report.rejected == [(name, report.rejected[0][1])]
    assert reason in report.rejected[0][1]
    assert sorted(report.extracted) == ["data/cats/a.jpg", "data/dogs/b.jpg"]
    assert files_under(dest) == {"data", "data/cats", "data/dogs", "data/cats/a.jpg", "data/dogs/b.jpg"}
    # nothing written anywhere else
    new = files_under(tmp_path) - before
    assert all(p.startswith("work/ds") or p == "work" for p in new), sorted(new)
    assert not any("evil" in p for p in files_under(tmp_path))


def test_symlink_member_never_becomes_a_link_or_a_file(tmp_path):
    archive = zip_with(tmp_path / "up.zip", GOOD, symlinks={"data/cats/link.jpg": "/etc/passwd"})
    dest = tmp_path / "ds"
    report = safe_extract(archive, dest)
    assert report.rejected == [("data/cats/link.jpg", "symbolic link; links are never extracted")]
    assert not (dest / "data/cats/link.jpg").exists()
    assert not any(p.is_symlink() for p in dest.rglob("*"))
    assert sorted(report.extracted) == ["data/cats/a.jpg", "data/dogs/b.jpg"]


def _zeros_zip(path, n_bytes, extra=()):
    """A member of ``n_bytes`` zeros (deflates about 1000:1), written in chunks."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in extra:
            zf.writestr(name, data)
        with zf.open("data/cats/bomb.bmp", "w", force_zip64=True) as fh:
            chunk = bytes(1 << 20)
            for _ in range(n_bytes >> 20):
                fh.write(chunk)
    return path


def test_zip_bomb_member_rejected_before_extraction_rest_loads(tmp_path):
    # 16 MiB of zeros stands in for any size: the check reads the header, not the data
    archive = _zeros_zip(tmp_path / "bomb.zip", 16 << 20, extra=GOOD + [("data/cats/c.jpg", jpeg_bytes(3))])
    dest = tmp_path / "work"
    ds = load_dataset(archive, workdir=dest)
    assert ds.classes == ["cats", "dogs"]
    assert sorted(it.rel for it in ds.items) == ["cats/a.jpg", "cats/c.jpg", "dogs/b.jpg"]
    skipped = ds.summary.skipped
    assert list(skipped["file"]) == ["bomb.zip:data/cats/bomb.bmp"]
    assert "zip bomb" in skipped["reason"][0] and "compression ratio" in skipped["reason"][0]
    assert not any(p.name == "bomb.bmp" for p in dest.rglob("*"))


def test_total_size_cap_rejects_whole_archive_before_writing(tmp_path):
    archive = zip_with(tmp_path / "big.zip", GOOD)
    dest = tmp_path / "ds"
    with pytest.raises(DatasetError, match=r"big\.zip: .* bytes uncompressed, more than the limit 1,000; nothing extracted"):
        safe_extract(archive, dest, limits=ZipLimits(max_total_bytes=1000))
    assert not dest.exists()


def test_entry_count_cap(tmp_path):
    archive = zip_with(tmp_path / "many.zip", [(f"data/c{i % 2}/{i}.jpg", jpeg_bytes(i)) for i in range(12)])
    with pytest.raises(DatasetError, match=r"many\.zip: 12 entries, more than the limit 10; nothing extracted"):
        safe_extract(archive, tmp_path / "ds", limits=ZipLimits(max_entries=10))
    assert not (tmp_path / "ds").exists()


def test_overall_ratio_cap_catches_many_moderate_members(tmp_path):
    # each member is under the per-member cap, together they are a bomb
    members = [(f"data/c{i % 2}/{i}.bmp", bytes(64 << 10)) for i in range(8)]
    archive = zip_with(tmp_path / "sneaky.zip", members)
    limits = ZipLimits(max_member_ratio=1e6, max_total_ratio=20, ratio_min_bytes=1024)
    with pytest.raises(DatasetError, match=r"sneaky\.zip: compression ratio \d+:1 is more than the limit 20:1"):
        safe_extract(archive, tmp_path / "ds", limits=limits)
    assert not (tmp_path / "ds").exists()


def test_member_inflating_beyond_its_declared_size_is_cut_off(tmp_path):
    """A lying header (declared small, inflates large) cannot bypass the caps."""
    archive = tmp_path / "liar.zip"
    zip_with(archive, GOOD + [("data/dogs/liar.bmp", bytes(1 << 20))])
    raw = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo("data/dogs/liar.bmp")
    declared = 1000
    # the sizes live in the local header (offset 22) and the central directory entry (offset 24)
    raw[info.header_offset + 22 : info.header_offset + 26] = declared.to_bytes(4, "little")
    cd = raw.rfind(b"PK\x01\x02", 0, len(raw))
    while raw[cd + 46 : cd + 46 + len(b"data/dogs/liar.bmp")] != b"data/dogs/liar.bmp":
        cd = raw.rfind(b"PK\x01\x02", 0, cd)
    raw[cd + 24 : cd + 28] = declared.to_bytes(4, "little")
    archive.write_bytes(bytes(raw))

    report = safe_extract(archive, tmp_path / "ds")
    assert [m for m, _ in report.rejected] == ["data/dogs/liar.bmp"]
    reason = report.rejected[0][1]
    assert "inflates beyond the 1,000 bytes" in reason or "corrupt member" in reason
    assert not (tmp_path / "ds/data/dogs/liar.bmp").exists()
    assert sorted(report.extracted) == ["data/cats/a.jpg", "data/dogs/b.jpg"]


def test_macosx_junk_is_ignored_silently(tmp_path):
    junk = [
        ("__MACOSX/data/cats/._a.jpg", b"\x00\x05\x16\x07junk"),
        ("data/.DS_Store", b"junk"),
        ("data/cats/.ipynb_checkpoints/a-checkpoint.jpg", jpeg_bytes(9)),
        ("data/dogs/Thumbs.db", b"junk"),
        ("data/dogs/._b.jpg", b"\x00\x05\x16\x07"),
    ]
    archive = zip_with(tmp_path / "mac.zip", GOOD + junk)
    dest = tmp_path / "work"
    ds = load_dataset(archive, workdir=dest)
    assert [it.rel for it in ds.items] == ["cats/a.jpg", "dogs/b.jpg"]
    assert ds.summary.skipped.empty and ds.summary.warnings["kind"].tolist().count("duplicate") == 0
    (extracted,) = list(dest.iterdir())
    assert files_under(extracted) == {"data", "data/cats", "data/dogs", "data/cats/a.jpg", "data/dogs/b.jpg"}


def test_not_a_zip(tmp_path):
    bad = tmp_path / "fake.zip"
    bad.write_text("hello")
    with pytest.raises(DatasetError, match=r"fake\.zip: not a readable zip archive"):
        load_dataset(bad, workdir=tmp_path / "w")
