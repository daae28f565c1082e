"""The imported dataset: items, classes, the split, the summary and a fingerprint."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable

from . import summary as S
from .errors import DatasetError
from .images import MAX_PIXELS, ImageInfo, check_many
from .split import stratified_split

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]

# Unicode's bidirectional controls: in a class name they make it display as
# something else (U+202E turns "gnp.exe" around), in the app, in tables and in a
# model's labels. Refused wherever a class name comes from.
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def check_bidi(name: str, where: str = "class name") -> None:
    """DatasetError if ``name`` holds a bidirectional control character (named by its code point)."""
    found = sorted({f"U+{ord(ch):04X}" for ch in name if ch in BIDI_CONTROLS})
    if found:
        raise DatasetError(f"{where} {name!r}: contains bidirectional control character(s) {', '.join(found)}, "
                           "which make it display as something else; rename it")


@dataclass(frozen=True)
class Item:
    path: Path  # absolute
    rel: str  # relative to the dataset root, posix separators
    label: int
    # filled in by the import's check; kept out of equality
    width: int = field(default=0, compare=False)
    height: int = field(default=0, compare=False)
    sha256: str = field(default="", compare=False, repr=False)


@dataclass
class Dataset:
    root: Path
    classes: list[str]
    items: list[Item]
    train_idx: list[int]
    val_idx: list[int]
    summary: S.Summary
    fingerprint: str

    def __len__(self) -> int:
        return len(self.items)

    @property
    def labels(self) -> list[int]:
        return [it.label for it in self.items]

    @property
    def paths(self) -> list[Path]:
        return [it.path for it in self.items]

    def file_lists(self) -> dict:
        """What a run's config.json keeps to rebuild this dataset with :meth:`from_files`."""
        return {
            "root": str(self.root),
            "classes": list(self.classes),
            "files": [[it.rel, self.classes[it.label]] for it in self.items],
            "train_rels": [self.items[i].rel for i in self.train_idx],
            "val_rels": [self.items[i].rel for i in self.val_idx],
        }

    @classmethod
    def from_files(
        cls,
        root: str | Path,
        files: list[tuple[str, str]],
        classes: list[str],
        train_rels: list[str],
        val_rels: list[str],
        *,
        max_pixels: int = MAX_PIXELS,
        progress: Progress | None = None,
    ) -> "Dataset":
        """Rebuild a dataset from saved file lists (e.g. to evaluate a finished run).

        ``classes`` is kept exactly as given (the model's outputs follow it),
        even for a class none of whose files is left. Files that are missing,
        outside ``root``, of an unknown class or no longer valid images are
        reported in ``summary.skipped``.
        """
        root = Path(root).resolve()
        if not root.is_dir():
            raise DatasetError(f"{root}: dataset folder not found")
        index = {c: i for i, c in enumerate(classes)}
        skipped: list[tuple[str, str]] = []
        todo: list[tuple[str, int, Path]] = []
        seen: set[str] = set()
        for entry in files:
            rel, cname = entry[0], entry[1]
            if rel in seen:
                skipped.append((rel, "listed twice"))
                continue
            seen.add(rel)
            if cname not in index:
                skipped.append((rel, f"unknown class {cname!r}"))
                continue
            try:
                path = resolve_inside(root, rel)
            except ValueError as exc:
                skipped.append((rel, str(exc)))
                continue
            if not path.is_file():
                skipped.append((rel, "file not found"))
                continue
            todo.append((PurePosixPath(rel).as_posix(), index[cname], path))
        infos = check_many([p for _, _, p in todo], max_pixels=max_pixels, progress=progress)
        found = []
        for (rel, label, path), info in zip(todo, infos):
            if isinstance(info, str):
                skipped.append((rel, info))
            else:
                found.append((rel, label, path, info))
        train_set, val_set = set(train_rels), set(val_rels)
        return assemble(
            root,
            list(classes),
            found,
            skipped,
            [],
            split=lambda rels, labels: (
                [i for i, r in enumerate(rels) if r in train_set],
                [i for i, r in enumerate(rels) if r in val_set],
            ),
            split_kind="saved",
            drop_empty=False,
            min_classes=1,
        )


def resolve_inside(root: Path, rel: str) -> Path:
    """``root / rel`` if it stays inside ``root`` (links resolved); ValueError otherwise."""
    p = PurePosixPath(rel.replace("\\", "/"))
    if p.is_absolute() or (p.parts and p.parts[0].endswith(":")):
        raise ValueError("absolute path; paths must be relative to the dataset folder")
    full = (root / p).resolve()
    if not full.is_relative_to(root):
        raise ValueError("path points outside the dataset folder")
    return full


def fingerprint(items: list[Item], classes: list[str]) -> str:
    h = hashlib.sha256()
    for it in items:
        h.update(f"{it.rel}\t{it.label}\t{classes[it.label]}\t{it.sha256}\n".encode())
    return h.hexdigest()


def assemble(
    root: Path,
    classes: list[str],
    found: list[tuple[str, int, Path, ImageInfo]],
    skipped: list[tuple[str, str]],
    warnings: list[tuple[str, str, str]],
    *,
    split: Callable[[list[str], list[int]], tuple[list[int], list[int]]] | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    split_kind: str = "random",
    drop_empty: bool = True,
    min_classes: int = 2,
    source: str = "",
) -> Dataset:
    """Order the items, drop empty classes, check there are two, split, summarise."""
    for name in classes:
        check_bidi(name, f"{source or root}: class")
    counts = [0] * len(classes)
    for _, label, _, _ in found:
        counts[label] += 1
    if drop_empty:
        keep = [y for y, n in enumerate(counts) if n > 0]
        for y, n in enumerate(counts):
            if n == 0:
                warnings.append(
                    (S.WARNING, "empty_class", f"class {classes[y]!r} has no usable images and is left out")
                )
        remap = {old: new for new, old in enumerate(keep)}
        usable = [classes[y] for y in keep]
        found = [(r, remap[y], p, info) for r, y, p, info in found]
    else:
        usable = classes
    where = source or str(root)
    n_usable = sum(1 for n in counts if n > 0)
    if n_usable < min_classes:
        described = ", ".join(f"{classes[y]!r} ({n} images)" for y, n in enumerate(counts) if n) or "none"
        extra = f"; {len(skipped)} file(s) skipped (first: {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        need = "at least two classes" if min_classes >= 2 else "a class"
        raise DatasetError(f"{where}: need {need} with usable images; found {n_usable}: {described}{extra}")
    found.sort(key=lambda f: (f[1], f[0]))
    items = [
        Item(path=p, rel=r, label=y, width=info.width, height=info.height, sha256=info.sha256)
        for r, y, p, info in found
    ]
    rels = [it.rel for it in items]
    labels = [it.label for it in items]
    if split is None:
        train_idx, val_idx, too_small = stratified_split(labels, val_fraction, seed)
        for y in too_small:
            warnings.append(
                (
                    S.WARNING,
                    "unsplittable",
                    f"class {usable[y]!r} has too few images to split; all of them are used for training",
                )
            )
        if val_fraction == 0:
            warnings.append((S.INFO, "no_validation", "val_fraction is 0: there is no validation set"))
    else:
        train_idx, val_idx = split(rels, labels)
    warnings.extend(
        S.content_warnings(usable, labels, rels, [it.sha256 for it in items], train_idx, val_idx)
    )
    summary = S.Summary(
        classes=S.classes_frame(usable, labels, [(it.width, it.height) for it in items], train_idx, val_idx),
        skipped=S.skipped_frame(skipped),
        warnings=S.warnings_frame(warnings),
        split=split_kind,
    )
    for level, kind, message in warnings:
        (log.warning if level == S.WARNING else log.info)("%s: %s", where, message)
    return Dataset(
        root=root,
        classes=usable,
        items=items,
        train_idx=train_idx,
        val_idx=val_idx,
        summary=summary,
        fingerprint=fingerprint(items, usable),
    )
