"""Atomic file writes: a reader sees the old file or the new one, never half.

The temporary file is made by ``mkstemp`` (mode 0600, so nobody reads it
half-written) and given the mode a plain ``open()`` would have given the
file (0666 less the umask: 0644 under the usual 022) before it is renamed
into place.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator


def current_umask() -> int:
    """The process's umask, read without changing it where Linux allows (``os.umask`` must set one)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    # Elsewhere: set and restore at once (a thread creating a file in between would get 022).
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it over ``dest`` on success."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Same suffix as the destination: some writers (torch.export) check it.
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.stem}.", suffix=f".tmp{dest.suffix}", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(dest: str | os.PathLike, text: str) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(dest: str | os.PathLike, data) -> None:
    write_text(dest, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
