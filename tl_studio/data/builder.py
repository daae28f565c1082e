"""Building a dataset class by class from uploaded files (Teachable-Machine style).

Each class is a folder under the builder's work directory; every uploaded
file is checked (allowed format, pixel cap, a full decode) before it is
copied in, under a name the builder chooses, so what lies in the work
directory is always a valid ImageFolder dataset.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .dataset import Dataset, Progress, check_bidi
from .errors import DatasetError
from .images import JUNK_NAMES, MAX_PIXELS, ImageInfo, check_many, is_junk, sha256_file
from .importers import import_folder

log = logging.getLogger(__name__)

MAX_CLASS_NAME = 100
_EXT = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp"}
_BAD_NAME_CHARS = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')


@dataclass
class AddReport:
    kept: list[str] = field(default_factory=list)  # names as stored in the class folder
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (uploaded file name, reason)


def check_class_name(name: str) -> str:
    """The class name, stripped, or DatasetError saying what is wrong with it."""
    if not isinstance(name, str):
        raise DatasetError(f"class name: must be text, got {type(name).__name__}")
    n = name.strip()
    if not n:
        raise DatasetError("class name: empty")
    if len(n) > MAX_CLASS_NAME:
        raise DatasetError(f"class name {n[:20]!r}...: longer than {MAX_CLASS_NAME} characters")
    bad = _BAD_NAME_CHARS.search(n)
    if bad:
        raise DatasetError(f"class name {n!r}: must not contain {bad.group()!r}")
    if n in (".", "..") or n.startswith(".") or n.lower() in JUNK_NAMES:
        raise DatasetError(f"class name {n!r}: reserved (hidden or system name)")
    check_bidi(n)
    return n


def _images_in(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.is_file() and not is_junk(p.name)]


class DatasetBuilder:
    """Classes and their images under ``workdir``; thread-safe for one workspace's handlers."""

    def __init__(self, workdir: str | os.PathLike, *, max_pixels: int = MAX_PIXELS):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.max_pixels = max_pixels
        self._lock = threading.RLock()

    # ---- classes --------------------------------------------------------------------
    @property
    def classes(self) -> list[str]:
        with self._lock:
            return sorted(
                p.name for p in self.workdir.iterdir() if p.is_dir() and not p.is_symlink() and not is_junk(p.name)
            )

    def counts(self) -> dict[str, int]:
        """Images per class."""
        with self._lock:
            return {c: len(_images_in(self.workdir / c)) for c in self.classes}

    def _existing(self, name: str) -> Path:
        d = self.workdir / name
        if name not in self.classes:
            known = ", ".join(map(repr, self.classes)) or "none"
            raise DatasetError(f"class {name!r}: no such class; classes: {known}")
        return d

    def _check_new(self, name: str) -> str:
        n = check_class_name(name)
        clash = [c for c in self.classes if c.casefold() == n.casefold()]
        if clash:
            raise DatasetError(f"class name {n!r}: class {clash[0]!r} already exists")
        return n

    def add_class(self, name: str) -> str:
        with self._lock:
            n = self._check_new(name)
            (self.workdir / n).mkdir()
            return n

    def remove_class(self, name: str) -> None:
        with self._lock:
            shutil.rmtree(self._existing(name))

    def rename_class(self, old: str, new: str) -> str:
        with self._lock:
            src = self._existing(old)
            n = check_class_name(new)
            if n == old:
                return n
            clash = [c for c in self.classes if c.casefold() == n.casefold() and c != old]
            if clash:
                raise DatasetError(f"class name {n!r}: class {clash[0]!r} already exists")
            src.rename(self.workdir / n)
            return n

    # ---- images -----------------------------------------------------------------------
    def add_images(
        self, name: str, files: list[str | os.PathLike], *, progress: Progress | None = None
    ) -> AddReport:
        """Check each file and copy the good ones into the class; the rest are reported."""
        paths = [Path(os.fspath(f)) for f in files]
        infos = check_many(paths, max_pixels=self.max_pixels, progress=progress, message="checking uploads")
        report = AddReport()
        with self._lock:
            folder = self._existing(name)
            have = {sha256_file(p): p.name for p in _images_in(folder)}
            for src, info in zip(paths, infos):
                if isinstance(info, str):
                    report.skipped.append((src.name, info))
                    continue
                if info.sha256 in have:
                    why = f"the same image is already in class {name!r} as {have[info.sha256]}"
                    report.skipped.append((src.name, why))
                    continue
                dest = self._free_name(folder, src.name, info)
                tmp = folder / f".upload-{uuid.uuid4().hex}"  # hidden: ignored if a crash leaves it
                try:
                    shutil.copyfile(src, tmp)
                    os.replace(tmp, dest)
                except OSError as exc:
                    tmp.unlink(missing_ok=True)
                    report.skipped.append((src.name, f"cannot copy: {exc.strerror or exc}"))
                    continue
                have[info.sha256] = dest.name
                report.kept.append(dest.name)
        log.info("class %r: %d image(s) added, %d skipped", name, len(report.kept), len(report.skipped))
        return report

    @staticmethod
    def _free_name(folder: Path, original: str, info: ImageInfo) -> Path:
        stem = _BAD_NAME_CHARS.sub("_", Path(original).stem).lstrip(".").strip() or "image"
        stem = stem[:80]
        ext = _EXT.get(info.format, ".img")
        dest = folder / f"{stem}{ext}"
        n = 1
        while dest.exists():
            dest = folder / f"{stem}-{n}{ext}"
            n += 1
        return dest

    def remove_images(self, name: str, stored_names: list[str]) -> None:
        with self._lock:
            folder = self._existing(name)
            for s in stored_names:
                p = folder / Path(s).name
                if p.is_file():
                    p.unlink()

    # ---- the dataset --------------------------------------------------------------------
    def dataset(self, val_fraction: float = 0.2, seed: int = 0, *, progress: Progress | None = None) -> Dataset:
        with self._lock:
            return import_folder(
                self.workdir,
                detect_layout=False,
                source_name="uploaded classes",
                val_fraction=val_fraction,
                seed=seed,
                progress=progress,
                max_pixels=self.max_pixels,
            )
