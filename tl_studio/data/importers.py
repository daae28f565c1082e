"""Importing a dataset from a folder, a .zip or a CSV of ``path,label``.

Folder layouts accepted (what people actually zip):

* ImageFolder: one sub-folder per class, images anywhere below it;
* the same inside one wrapping top folder;
* ``train/`` and ``val/`` (or ``valid/``, ``validation/``) folders, each in
  ImageFolder layout: an explicit split, used as given;
* a single ``*.csv`` with ``path`` and ``label`` columns at the top.

Junk (``__MACOSX``, ``.DS_Store``, hidden files, ``.ipynb_checkpoints``,
``Thumbs.db``) is ignored silently; every other file that cannot be used is
reported in ``summary.skipped`` with the reason, and the rest still loads.
"""

from __future__ import annotations

import csv
import logging
import os
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from . import summary as S
from .archive import ZipLimits, safe_extract
from .dataset import Dataset, Progress, assemble, resolve_inside
from .errors import DatasetError
from .images import MAX_PIXELS, ImageRejected, check_many, is_junk, open_image
from .split import check_fraction

log = logging.getLogger(__name__)

TRAIN_NAMES = ("train", "training")
VAL_NAMES = ("val", "valid", "validation")
TEST_NAMES = ("test", "testing")
PATH_COLUMNS = ("path", "file", "filename", "image")
LABEL_COLUMNS = ("label", "class", "category")


@dataclass
class _Candidate:
    rel: str  # relative to the dataset root, posix
    class_name: str
    path: Path
    subset: str = ""  # "train" / "val" for an explicit split


def load_dataset(
    source: str | os.PathLike,
    *,
    workdir: str | os.PathLike | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    progress: Progress | None = None,
    zip_limits: ZipLimits = ZipLimits(),
    max_pixels: int = MAX_PIXELS,
) -> Dataset:
    """Import a dataset from a folder, a ``.zip`` or a ``.csv``; see the module docstring.

    A zip is extracted under ``workdir/<unique id>/`` (``workdir`` defaults to
    a new temporary directory), never anywhere else.
    """
    check_fraction(val_fraction)
    src = Path(source)
    if not src.exists():
        raise DatasetError(f"{src}: no such file or folder")
    opts = dict(val_fraction=val_fraction, seed=seed, progress=progress, max_pixels=max_pixels)
    if src.is_dir():
        return import_folder(src, source_name=str(src), **opts)
    suffix = src.suffix.lower()
    if suffix == ".csv":
        return import_csv(src, src.parent, skipped=[], source_name=str(src), **opts)
    if suffix == ".zip":
        base = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="tl-studio-data-"))
        dest = base / uuid.uuid4().hex
        report = safe_extract(src, dest, limits=zip_limits, progress=progress)
        skipped = [(f"{src.name}:{m}", f"archive member rejected: {r}") for m, r in report.rejected]
        return import_folder(dest, skipped=skipped, source_name=str(src), **opts)
    raise DatasetError(f"{src}: expected a folder, a .zip or a .csv file, got a {suffix or 'file without extension'!r}")


def import_folder(
    root: Path,
    *,
    detect_layout: bool = True,
    skipped: list[tuple[str, str]] | None = None,
    source_name: str = "",
    val_fraction: float = 0.2,
    seed: int = 0,
    progress: Progress | None = None,
    max_pixels: int = MAX_PIXELS,
) -> Dataset:
    root = root.resolve()
    skipped = list(skipped or [])
    warnings: list[tuple[str, str, str]] = []
    if detect_layout:
        root = _unwrap(root)
    base = root
    opts = dict(val_fraction=val_fraction, seed=seed, progress=progress, max_pixels=max_pixels)

    csv_file = _label_csv(base) if detect_layout else None
    if csv_file is not None:
        return import_csv(csv_file, base, skipped=skipped, source_name=source_name, **opts)

    train_dir, val_dir, others = _split_dirs(base) if detect_layout else (None, None, [])
    if train_dir is not None and val_dir is None:
        warnings.append(
            (S.INFO, "layout", f"found {train_dir.name}/ without a validation folder; splitting it at random")
        )
        base, others = train_dir, []
        train_dir = None
    for d in others:
        warnings.append((S.WARNING, "ignored_folder", f"folder {d.name}/ is ignored beside train/ and val/"))

    cands: list[_Candidate] = []
    if train_dir is not None and val_dir is not None:
        t_classes = _scan_classes(train_dir, root, cands, skipped, "train")
        v_classes = _scan_classes(val_dir, root, cands, skipped, "val")
        classes = sorted(t_classes | v_classes)
        for c in sorted(v_classes - t_classes):
            msg = f"class {c!r} is in {val_dir.name}/ but not in {train_dir.name}/"
            warnings.append((S.WARNING, "no_train_images", msg))
        for c in sorted(t_classes - v_classes):
            warnings.append((S.WARNING, "no_val_images", f"class {c!r} has no folder in {val_dir.name}/"))
        split_kind = "folders"
    else:
        classes = sorted(_scan_classes(base, root, cands, skipped, ""))
        split_kind = "random"
    if not classes:
        raise DatasetError(
            f"{source_name or root}: found no class folders; expected one sub-folder per class "
            "(optionally inside one top folder, or under train/ and val/), or a CSV of path,label"
        )
    return _finish(root, classes, cands, skipped, warnings, split_kind, source_name, **opts)


def import_csv(
    csv_path: Path,
    root: Path,
    *,
    skipped: list[tuple[str, str]] | None = None,
    source_name: str = "",
    val_fraction: float = 0.2,
    seed: int = 0,
    progress: Progress | None = None,
    max_pixels: int = MAX_PIXELS,
) -> Dataset:
    """Rows of ``path,label``; paths resolve inside ``root`` only (links included)."""
    root = root.resolve()
    skipped = list(skipped or [])
    name = csv_path.name
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except (OSError, csv.Error) as exc:
        raise DatasetError(f"{name}: cannot read the CSV ({exc})") from None
    if not rows:
        raise DatasetError(f"{name}: the CSV is empty; expected rows of path,label")
    pcol, lcol, start = _csv_columns(rows[0], name)
    cands: list[_Candidate] = []
    seen: dict[str, str] = {}
    for lineno, row in enumerate(rows[start:], start + 1):
        if not row or all(not c.strip() for c in row):
            continue
        where = f"{name}:{lineno}"
        if len(row) <= max(pcol, lcol):
            skipped.append((where, f"line {lineno}: expected path,label, got {len(row)} column(s)"))
            continue
        rel, label = row[pcol].strip(), row[lcol].strip()
        if not rel:
            skipped.append((where, f"line {lineno}: empty path"))
            continue
        if not label:
            skipped.append((rel, f"line {lineno}: empty label"))
            continue
        try:
            path = resolve_inside(root, rel)
        except ValueError as exc:
            skipped.append((rel, f"line {lineno}: {exc}"))
            continue
        key = path.relative_to(root).as_posix()
        if key in seen:
            why = "listed twice"
            if seen[key] != label:
                why += f" with different labels ({seen[key]!r}, {label!r})"
            skipped.append((rel, f"line {lineno}: {why}"))
            continue
        if is_junk(key):
            continue
        if not path.is_file():
            skipped.append((rel, f"line {lineno}: file not found"))
            continue
        seen[key] = label
        cands.append(_Candidate(key, label, path))
    classes = sorted({c.class_name for c in cands})
    return _finish(
        root, classes, cands, skipped, [], "random", source_name or str(csv_path),
        val_fraction=val_fraction, seed=seed, progress=progress, max_pixels=max_pixels,
    )


# ---- layout -------------------------------------------------------------------
def _entries(d: Path) -> list[Path]:
    try:
        return sorted(p for p in d.iterdir() if not is_junk(p.name))
    except OSError as exc:
        raise DatasetError(f"{d}: cannot list the folder ({exc.strerror or exc})") from None


def _is_real_dir(p: Path) -> bool:
    return p.is_dir() and not p.is_symlink()


def _unwrap(root: Path) -> Path:
    """Step into a single wrapping folder (how people zip a dataset)."""
    entries = _entries(root)
    dirs = [p for p in entries if _is_real_dir(p)]
    files = [p for p in entries if not _is_real_dir(p)]
    if len(dirs) == 1 and not files and any(_is_real_dir(p) for p in _entries(dirs[0])):
        return dirs[0]
    return root


def _label_csv(base: Path) -> Path | None:
    csvs = [p for p in _entries(base) if p.is_file() and p.suffix.lower() == ".csv"]
    if len(csvs) != 1:
        return None
    try:
        with open(csvs[0], newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    names = {h.strip().lower() for h in header}
    return csvs[0] if names & set(PATH_COLUMNS) and names & set(LABEL_COLUMNS) else None


def _csv_columns(first: list[str], name: str) -> tuple[int, int, int]:
    """(path column, label column, first data row) from the header, or columns 0 and 1 without one."""
    low = [c.strip().lower() for c in first]
    pcol = next((low.index(c) for c in PATH_COLUMNS if c in low), None)
    lcol = next((low.index(c) for c in LABEL_COLUMNS if c in low), None)
    if pcol is not None and lcol is not None:
        return pcol, lcol, 1
    if pcol is not None or lcol is not None:
        raise DatasetError(
            f"{name}: header {first!r} needs both a path column ({', '.join(PATH_COLUMNS)}) "
            f"and a label column ({', '.join(LABEL_COLUMNS)})"
        )
    if len(first) < 2:
        raise DatasetError(f"{name}: expected rows of path,label, the first row has {len(first)} column(s)")
    return 0, 1, 0


def _split_dirs(base: Path) -> tuple[Path | None, Path | None, list[Path]]:
    dirs = [p for p in _entries(base) if _is_real_dir(p)]
    train = next((d for d in dirs if d.name.lower() in TRAIN_NAMES), None)
    val = next((d for d in dirs if d.name.lower() in VAL_NAMES), None)
    if train is None:
        return None, None, []
    others = [d for d in dirs if d not in (train, val)]
    return train, val, others


def _scan_classes(
    base: Path, root: Path, cands: list[_Candidate], skipped: list[tuple[str, str]], subset: str
) -> set[str]:
    """Add every file under each class folder of ``base``; return the class names found."""
    classes: set[str] = set()
    for entry in _entries(base):
        rel = entry.relative_to(root).as_posix()
        if entry.is_symlink():
            skipped.append((rel, "symbolic link at the top of the dataset; not followed"))
            continue
        if entry.is_file():
            if _looks_like_image(entry):
                skipped.append((rel, "not inside a class folder"))
            continue  # READMEs, licences and label files beside the classes are not data
        if not entry.is_dir():
            continue
        classes.add(entry.name)
        for dirpath, dirnames, filenames in os.walk(entry):  # links to folders are not followed
            dirnames[:] = sorted(d for d in dirnames if not is_junk(d))
            here = Path(dirpath)
            for d in dirnames:
                if (here / d).is_symlink():
                    skipped.append(((here / d).relative_to(root).as_posix(), "link to a folder; not followed"))
            for fname in sorted(filenames):
                if is_junk(fname):
                    continue
                path = here / fname
                frel = path.relative_to(root).as_posix()
                if path.is_symlink():
                    target = path.resolve()
                    if not target.is_relative_to(root):
                        skipped.append((frel, "link pointing outside the dataset folder"))
                        continue
                if not path.is_file():
                    skipped.append((frel, "not a regular file"))
                    continue
                cands.append(_Candidate(frel, entry.name, path, subset))
    return classes


def _looks_like_image(p: Path) -> bool:
    try:
        open_image(p).close()
        return True
    except ImageRejected as exc:
        return str(exc).startswith("pixel-count bomb")


# ---- check, split, summarise ----------------------------------------------------------
def _finish(
    root: Path,
    classes: list[str],
    cands: list[_Candidate],
    skipped: list[tuple[str, str]],
    warnings: list[tuple[str, str, str]],
    split_kind: str,
    source_name: str,
    *,
    val_fraction: float,
    seed: int,
    progress: Progress | None,
    max_pixels: int,
) -> Dataset:
    index = {c: i for i, c in enumerate(classes)}
    infos = check_many([c.path for c in cands], max_pixels=max_pixels, progress=progress)
    found = []
    subset_of: dict[str, str] = {}
    for cand, info in zip(cands, infos):
        if isinstance(info, str):
            skipped.append((cand.rel, info))
            continue
        found.append((cand.rel, index[cand.class_name], cand.path, info))
        subset_of[cand.rel] = cand.subset
    split = None
    if split_kind == "folders":
        def split(rels, labels):
            return (
                [i for i, r in enumerate(rels) if subset_of[r] == "train"],
                [i for i, r in enumerate(rels) if subset_of[r] == "val"],
            )
    ds = assemble(
        root, classes, found, skipped, warnings, split=split, val_fraction=val_fraction, seed=seed,
        split_kind=split_kind, source=source_name,
    )
    log.info(
        "%s: %d images in %d classes (%d train, %d val), %d skipped",
        source_name or root, len(ds.items), len(ds.classes), len(ds.train_idx), len(ds.val_idx), len(skipped),
    )
    return ds
