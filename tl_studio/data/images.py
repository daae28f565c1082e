"""Opening untrusted image files safely and turning any of them into RGB.

Every file is hostile until checked. Only the formats in :data:`ALLOWED_FORMATS`
are ever parsed (PIL is told not to try its other plugins, some of which hand
the file to external programs), the pixel count is checked from the header
before anything is decoded, and the whole file is decoded once at import so a
truncated or corrupt file is caught there, not in the middle of training.
"""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InputError

log = logging.getLogger(__name__)

# Decided by what PIL detects in the bytes, never by the file's extension.
# (PIL's JPEG opener also returns "MPO", the multi-picture JPEGs many phones
# and cameras write.)
ALLOWED_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP")

# Our own cap, checked from the header: PIL's Image.MAX_IMAGE_PIXELS is a
# process-wide setting any other code may change (or set to None).
MAX_PIXELS = 64_000_000

# Names that operating systems and notebooks leave behind: never data, never errors.
JUNK_NAMES = frozenset({"__macosx", ".ds_store", "thumbs.db", "desktop.ini", ".ipynb_checkpoints"})

_HASH_CHUNK = 1 << 20


class ImageRejected(InputError):
    """A file that is not a usable image; the message is the reason shown to the user."""


@dataclass(frozen=True)
class ImageInfo:
    format: str
    mode: str
    width: int  # after EXIF orientation
    height: int
    sha256: str


def is_junk(rel: str | PurePosixPath) -> bool:
    """True for OS/notebook litter and hidden files anywhere in the path."""
    for part in PurePosixPath(rel).parts:
        if part.lower() in JUNK_NAMES or part.startswith("."):
            return True
    return False


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def open_image(path: Path, *, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open (header only) an allowed image whose pixel count is within the cap."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageRejected(f"cannot read: {exc.strerror or exc}") from None
    if size == 0:
        raise ImageRejected("empty file (0 bytes)")
    try:
        img = Image.open(path, formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError as exc:
        raise ImageRejected(f"pixel-count bomb: {exc}") from None
    except UnidentifiedImageError:
        raise ImageRejected(
            f"not an image in an allowed format ({', '.join(ALLOWED_FORMATS)})"
        ) from None
    except (OSError, ValueError, SyntaxError) as exc:  # PIL reports bad headers in all three
        if "truncat" in str(exc).lower():
            raise ImageRejected(f"truncated image: {exc}") from None
        raise ImageRejected(f"corrupt image header: {exc}") from None
    w, h = img.size
    if w <= 0 or h <= 0:
        img.close()
        raise ImageRejected(f"corrupt image header: size {w}x{h}")
    if w * h > max_pixels:
        img.close()
        raise ImageRejected(
            f"pixel-count bomb: header claims {w}x{h} = {w * h:,} pixels, more than the limit {max_pixels:,}"
        )
    return img


def _orient(img: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(img)
    except Exception as exc:  # a broken EXIF block must not cost the image
        log.debug("ignoring unreadable EXIF orientation: %s", exc)
        return img


def _high_bit_depth_to_l(img: Image.Image) -> Image.Image:
    """16/32-bit grayscale to 8-bit by rescaling its range; never clip."""
    a = np.asarray(img)
    if img.mode.startswith("I;16") or (a.min() >= 0 and a.max() <= 65535 and img.mode == "I"):
        out = a.astype(np.float64) / 257.0  # full 16-bit range 0..65535 -> 0..255
    elif img.mode == "F" and a.min() >= 0.0 and a.max() <= 1.0:
        out = a.astype(np.float64) * 255.0
    else:  # signed or unusual ranges: stretch what is there
        lo, hi = float(a.min()), float(a.max())
        out = (a.astype(np.float64) - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros(a.shape)
    return Image.fromarray(np.rint(out).astype(np.uint8), mode="L")


def _over_white(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode as 8-bit RGB: transparency over white, 16-bit rescaled, CMYK converted."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I", "F") or mode.startswith("I;16"):
        return _high_bit_depth_to_l(img).convert("RGB")
    if mode in ("RGBA", "LA", "RGBa", "La", "PA") or (mode == "P" and "transparency" in img.info):
        return _over_white(img)
    if mode == "P":
        return img.convert("RGB")
    if mode in ("1", "L", "CMYK", "YCbCr"):
        return img.convert("RGB")
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ImageRejected(f"unsupported colour mode {mode}: {exc}") from None


def draft_for(img: Image.Image, shorter_side: int) -> None:
    """Let JPEG decode at a reduced scale that still has ``shorter_side`` pixels."""
    if img.format not in ("JPEG", "MPO") or shorter_side <= 0:
        return
    w, h = img.size
    r = shorter_side / min(w, h)
    if r < 1:
        img.draft("RGB", (max(1, int(np.ceil(w * r))), max(1, int(np.ceil(h * r)))))


def _decode(img: Image.Image) -> None:
    try:
        img.load()
    except Image.DecompressionBombError as exc:
        raise ImageRejected(f"pixel-count bomb: {exc}") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        reason = str(exc)
        if "truncat" in reason.lower():
            raise ImageRejected(f"truncated image: {reason}") from None
        raise ImageRejected(f"corrupt image data: {reason}") from None


def load_rgb(path: Path, *, max_pixels: int = MAX_PIXELS, min_side: int = 0) -> Image.Image:
    """Decode an untrusted file as an upright 8-bit RGB image.

    ``min_side`` > 0 allows a reduced-scale JPEG decode whose shorter side is
    still at least that many pixels (much faster for camera photos).
    """
    with open_image(path, max_pixels=max_pixels) as img:
        draft_for(img, min_side)
        _decode(img)
        return to_rgb(_orient(img))


_SWAPS_AXES = {5, 6, 7, 8}  # EXIF orientations that turn the picture by 90 degrees


def check_image(path: Path, *, max_pixels: int = MAX_PIXELS) -> ImageInfo:
    """Validate a file fully (header, pixel cap, a complete decode) and describe it.

    The decode runs at a reduced JPEG scale: every compressed byte is still read,
    so truncation and corruption are still caught, at a fraction of the cost.
    """
    with open_image(path, max_pixels=max_pixels) as img:
        fmt, mode = img.format, img.mode
        w, h = img.size
        try:
            if img.getexif().get(0x0112) in _SWAPS_AXES:
                w, h = h, w
        except Exception:  # unreadable EXIF: the decode below decides
            pass
        draft_for(img, 32)
        _decode(img)
        to_rgb(img)
    if fmt == "PNG":
        # PNG decoding does not check chunk checksums, so garbage inside the
        # pixel data or a missing end would pass; verify() checks every chunk
        with open_image(path, max_pixels=max_pixels) as img:
            try:
                img.verify()
            except (OSError, SyntaxError, ValueError) as exc:
                reason = str(exc)
                kind = "truncated image" if "truncated" in reason.lower() else "corrupt image data"
                raise ImageRejected(f"{kind}: {reason}") from None
    return ImageInfo(format=fmt, mode=mode, width=w, height=h, sha256=sha256_file(path))


CHECK_WINDOW = 4096


def check_many(
    paths: list[Path],
    *,
    max_pixels: int = MAX_PIXELS,
    workers: int | None = None,
    progress: Callable[[float, str], None] | None = None,
    message: str = "checking images",
) -> list[ImageInfo | str]:
    """:func:`check_image` over many files in threads; a reason string where one is rejected.

    PIL releases the GIL while decoding, so threads give real parallelism here.
    Results come back in the order of ``paths``.
    """
    workers = workers or min(4, os.cpu_count() or 1)

    def one(p: Path) -> ImageInfo | str:
        try:
            return check_image(p, max_pixels=max_pixels)
        except ImageRejected as exc:
            return str(exc)

    out: list[ImageInfo | str] = [""] * len(paths)
    if not paths:
        return out
    done = 0
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tl-check") as pool:
        # A window of files in flight at a time: 100,000 files are not 100,000 futures at once.
        # Nothing decoded is kept: a check returns the file's description (or why it is rejected).
        for start in range(0, len(paths), CHECK_WINDOW):
            window = paths[start:start + CHECK_WINDOW]
            futures = {pool.submit(one, p): i for i, p in enumerate(window, start)}
            for fut in as_completed(futures):
                out[futures[fut]] = fut.result()
                done += 1
                if progress is not None:
                    progress(done / len(paths), message)
    return out
