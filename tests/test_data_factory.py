"""Builders of real (and hostile) image files and archives for the data tests. No tests here."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = [(200, 30, 30), (30, 160, 40), (40, 60, 210), (220, 200, 40), (120, 40, 160)]


def rgb_image(seed: int, size=(48, 40), base=(128, 128, 128)) -> Image.Image:
    """A distinct image per seed: a base colour plus seeded noise."""
    rng = np.random.default_rng(seed)
    a = np.clip(np.array(base, dtype=np.int16) + rng.integers(-60, 60, (size[1], size[0], 3)), 0, 255)
    return Image.fromarray(a.astype(np.uint8), "RGB")


def jpeg_bytes(seed: int = 0, size=(48, 40), base=(128, 128, 128), **save) -> bytes:
    buf = io.BytesIO()
    rgb_image(seed, size, base).save(buf, "JPEG", quality=90, **save)
    return buf.getvalue()


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def image_folder(root: Path, counts: dict[str, int], size=(48, 40), seed: int = 0) -> Path:
    """ImageFolder layout: ``counts[class]`` distinct JPEGs per class (distinct across seeds too)."""
    seed *= 10_000
    for k, (cls, n) in enumerate(counts.items()):
        for i in range(n):
            seed += 1
            write(root / cls / f"{i:03d}.jpg", jpeg_bytes(seed, size, COLOURS[k % len(COLOURS)]))
    return root


def png_bomb_bytes(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny, valid-looking PNG whose header claims ``width`` x ``height`` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def zip_with(path: Path, members: list[tuple[str, bytes]], *, symlinks: dict[str, str] | None = None) -> Path:
    """A zip holding ``members`` under exactly the names given (no sanitising), plus symlink members."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (0o100644 << 16)
            zf.writestr(info, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3  # Unix: the mode bits below are meaningful
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, target)
    return path


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}
