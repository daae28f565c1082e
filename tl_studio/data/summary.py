"""The dataset summary: per-class counts and image sizes, skipped files, warnings."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

import pandas as pd

FEW_IMAGES = 5
IMBALANCE_RATIO = 10.0

WARNING, INFO = "warning", "info"


@dataclass
class Summary:
    classes: pd.DataFrame  # class, images, train, val, median_width, median_height, min_side, max_side
    skipped: pd.DataFrame  # file, reason
    warnings: pd.DataFrame  # level, kind, message
    split: str = "random"  # "random" (stratified, seeded) or "folders" (explicit train/ and val/)

    @property
    def counts(self) -> dict[str, int]:
        return {
            "classes": int(len(self.classes)),
            "images": int(self.classes["images"].sum()) if len(self.classes) else 0,
            "train": int(self.classes["train"].sum()) if len(self.classes) else 0,
            "val": int(self.classes["val"].sum()) if len(self.classes) else 0,
            "skipped": int(len(self.skipped)),
            "warnings": int(len(self.warnings)),
        }

    def to_dict(self) -> dict:
        """Plain JSON-able data for scripts and a run's config."""
        c = self.counts
        return {
            "classes": self.classes.to_dict(orient="records"),
            "counts": {"images": c["images"], "classes": c["classes"], "skipped": c["skipped"]},
            "split": {"kind": self.split, "train": c["train"], "val": c["val"]},
            "skipped": self.skipped.to_dict(orient="records"),
            "warnings": self.warnings.to_dict(orient="records"),
        }


def skipped_frame(rows: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["file", "reason"]).astype({"file": str, "reason": str})


def warnings_frame(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["level", "kind", "message"]).astype(str)


def classes_frame(
    classes: list[str],
    labels: list[int],
    sizes: list[tuple[int, int] | None],
    train_idx: list[int],
    val_idx: list[int],
) -> pd.DataFrame:
    in_train, in_val = set(train_idx), set(val_idx)
    rows = []
    for y, name in enumerate(classes):
        idx = [i for i, lab in enumerate(labels) if lab == y]
        known = [sizes[i] for i in idx if sizes[i] is not None]
        widths = pd.Series([w for w, _ in known], dtype="float64")
        heights = pd.Series([h for _, h in known], dtype="float64")
        sides = pd.Series([min(s) for s in known], dtype="float64")
        rows.append(
            {
                "class": name,
                "images": len(idx),
                "train": sum(i in in_train for i in idx),
                "val": sum(i in in_val for i in idx),
                "median_width": _int(widths.median()),
                "median_height": _int(heights.median()),
                "min_side": _int(sides.min()),
                "max_side": _int(sides.max()),
            }
        )
    cols = ["class", "images", "train", "val", "median_width", "median_height", "min_side", "max_side"]
    return pd.DataFrame(rows, columns=cols).astype(
        {"images": "int64", "train": "int64", "val": "int64"}
    )


def _int(v) -> int | None:
    return None if pd.isna(v) else int(v)


def content_warnings(
    classes: list[str],
    labels: list[int],
    rels: list[str],
    hashes: list[str],
    train_idx: list[int],
    val_idx: list[int],
) -> list[tuple[str, str, str]]:
    """Few images per class, imbalance, duplicate files."""
    out: list[tuple[str, str, str]] = []
    counts = Counter(labels)
    for y, name in enumerate(classes):
        n = counts.get(y, 0)
        if 0 < n < FEW_IMAGES:
            out.append(
                (WARNING, "few_images", f"class {name!r} has only {n} image{'s' * (n != 1)} (fewer than {FEW_IMAGES})")
            )
    present = {y: n for y, n in counts.items() if n > 0}
    if len(present) >= 2:
        big = max(present, key=lambda y: (present[y], -y))
        small = min(present, key=lambda y: (present[y], y))
        ratio = present[big] / present[small]
        if ratio > IMBALANCE_RATIO:
            out.append(
                (
                    WARNING,
                    "imbalance",
                    f"classes are imbalanced {ratio:.1f}:1 ({classes[big]!r} has {present[big]}, "
                    f"{classes[small]!r} has {present[small]}); consider balanced sampling or class weights",
                )
            )
    groups: dict[str, list[int]] = defaultdict(list)
    for i, h in enumerate(hashes):
        if h:
            groups[h].append(i)
    in_train, in_val = set(train_idx), set(val_idx)
    for idx in groups.values():
        if len(idx) < 2:
            continue
        names = " and ".join(rels[i] for i in idx) if len(idx) == 2 else ", ".join(rels[i] for i in idx)
        msg = f"duplicate files (same content): {names}"
        if len({labels[i] for i in idx}) > 1:
            msg += "; they are labelled differently"
        if any(i in in_train for i in idx) and any(i in in_val for i in idx):
            msg += "; copies are in both training and validation, so validation scores are optimistic"
        out.append((WARNING, "duplicate", msg))
    return out
