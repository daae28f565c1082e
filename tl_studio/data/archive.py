"""Extracting an untrusted .zip safely under one directory.

Everything is decided from the central directory *before* a byte is written.
A member whose own name, type or compression ratio is bad is rejected and
reported, and the rest still extract; then the entry count, and the total
uncompressed size and overall compression ratio of what is left, bound the
whole archive (over a limit, nothing at all is extracted). While copying, a member that inflates beyond the size its
header declared is cut off and rejected, so a lying header cannot bypass the
caps. Members are only ever written as regular files created fresh
(``open(..., "xb")``): no symlink, device or hard link is ever made.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable

from .errors import DatasetError
from .images import is_junk

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ZipLimits:
    max_entries: int = 100_000
    max_total_bytes: int = 4 << 30
    # zip of JPEG/PNG is about 1:1; a flat-colour BMP or TIFF can compress a lot,
    # so ratios only count for members big enough to matter
    max_member_ratio: float = 200.0
    max_total_ratio: float = 100.0
    ratio_min_bytes: int = 1 << 20


@dataclass
class ExtractReport:
    root: Path
    extracted: list[str] = field(default_factory=list)  # member names, as in the archive
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (member name, reason)


_DRIVE = re.compile(r"^[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_COPY_CHUNK = 1 << 20


def member_path(name: str) -> PurePosixPath:
    """The safe relative path for a member name, or ValueError saying why not."""
    if _CONTROL.search(name):
        raise ValueError("control character in the name")
    # Windows tools may write backslash separators; treat them as separators so
    # "..\\..\\x" is seen for the traversal it is.
    unified = name.replace("\\", "/")
    if _DRIVE.match(unified):
        raise ValueError("absolute path with a drive letter")
    if unified.startswith("/"):
        raise ValueError("absolute path")
    parts = [p for p in unified.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValueError("path escapes the archive (..)")
    if not parts:
        raise ValueError("empty name")
    return PurePosixPath(*parts)


def _file_type(info: zipfile.ZipInfo) -> int:
    # Unix mode bits live in the high 16 bits when the archive came from a Unix tool.
    return stat.S_IFMT(info.external_attr >> 16)


def safe_extract(
    archive: Path,
    dest: Path,
    *,
    limits: ZipLimits = ZipLimits(),
    progress: Callable[[float, str], None] | None = None,
) -> ExtractReport:
    """Extract ``archive`` under ``dest`` (created, must be empty or absent)."""
    name = archive.name
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DatasetError(f"{name}: not a readable zip archive ({exc})") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.max_entries:
            raise DatasetError(
                f"{name}: {len(infos):,} entries, more than the limit {limits.max_entries:,}; nothing extracted"
            )
        root = dest.resolve()
        report = ExtractReport(root=root)
        plan: list[tuple[zipfile.ZipInfo, Path]] = []
        seen: set[str] = set()
        for info in infos:
            try:
                rel = member_path(info.filename)
            except ValueError as exc:
                report.rejected.append((info.filename, f"unsafe member name: {exc}"))
                continue
            if is_junk(rel):
                continue
            kind = _file_type(info)
            if kind == stat.S_IFLNK:
                report.rejected.append((info.filename, "symbolic link; links are never extracted"))
                continue
            if info.is_dir() or kind == stat.S_IFDIR:
                continue  # directories are made as their files need them
            if kind not in (0, stat.S_IFREG):
                report.rejected.append((info.filename, "not a regular file"))
                continue
            if info.flag_bits & 0x1:
                report.rejected.append((info.filename, "encrypted member"))
                continue
            if (
                info.file_size >= limits.ratio_min_bytes
                and info.file_size > limits.max_member_ratio * max(info.compress_size, 1)
            ):
                ratio = info.file_size / max(info.compress_size, 1)
                report.rejected.append(
                    (
                        info.filename,
                        f"compression ratio {ratio:.0f}:1 is more than the limit "
                        f"{limits.max_member_ratio:.0f}:1 (a zip bomb?)",
                    )
                )
                continue
            key = rel.as_posix().casefold()
            if key in seen:
                report.rejected.append((info.filename, "duplicate member name"))
                continue
            seen.add(key)
            target = root.joinpath(*rel.parts)
            # belt and braces: the joined path must stay under the root
            if not Path(os.path.normpath(target)).is_relative_to(root):
                report.rejected.append((info.filename, "unsafe member name: resolves outside the archive"))
                continue
            plan.append((info, target))

        # totals over what would actually be written: a rejected bomb member does
        # not sink the archive, many members each just under the member cap do
        total = sum(info.file_size for info, _ in plan)
        packed = sum(info.compress_size for info, _ in plan)
        if total > limits.max_total_bytes:
            raise DatasetError(
                f"{name}: {total:,} bytes uncompressed, more than the limit "
                f"{limits.max_total_bytes:,}; nothing extracted"
            )
        if total >= limits.ratio_min_bytes and total > limits.max_total_ratio * max(packed, 1):
            raise DatasetError(
                f"{name}: compression ratio {total / max(packed, 1):.0f}:1 is more than the limit "
                f"{limits.max_total_ratio:.0f}:1 (a zip bomb?); nothing extracted"
            )
        dest.mkdir(parents=True, exist_ok=True)
        written = 0
        for n, (info, target) in enumerate(plan):
            try:
                written += _copy_member(zf, info, target, root, limits.max_total_bytes - written)
                report.extracted.append(info.filename)
            except ValueError as exc:
                report.rejected.append((info.filename, str(exc)))
            if progress is not None:
                progress((n + 1) / max(len(plan), 1), f"extracting {name}")
    for member, reason in report.rejected:
        log.warning("%s: %s: %s", name, member, reason)
    return report


def _copy_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, root: Path, budget: int) -> int:
    """Copy one member as a new regular file; ValueError (with the reason) on any problem."""
    # mkdir on each level by hand: a component that already exists as a file or
    # link is an error, never followed
    parent = root
    for part in target.relative_to(root).parts[:-1]:
        parent = parent / part
        if parent.is_symlink() or (parent.exists() and not parent.is_dir()):
            raise ValueError("a path component is not a directory")
        parent.mkdir(exist_ok=True)
    limit = min(info.file_size, budget)
    copied = 0
    try:
        with zf.open(info) as src, open(target, "xb") as dst:
            while chunk := src.read(_COPY_CHUNK):
                copied += len(chunk)
                if copied > limit:
                    raise ValueError(
                        f"inflates beyond the {info.file_size:,} bytes its header declares (a zip bomb?)"
                    )
                dst.write(chunk)
    except ValueError:
        target.unlink(missing_ok=True)
        raise
    except FileExistsError:
        raise ValueError("a file of that name was already extracted") from None
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as exc:
        target.unlink(missing_ok=True)
        raise ValueError(f"corrupt member: {exc}") from None
    return copied
