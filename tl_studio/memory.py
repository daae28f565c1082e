"""One memory budget for what a run holds per image, and the disk it spills to beyond it.

The decoded images (data/store.py) and the frozen-feature cache (train/cache.py)
grow with the dataset; everything else a run holds (the model, its optimizer,
the pooled features of a head fit) is either fixed or small. Both read one
budget, ``--memory-budget`` (default: :data:`DEFAULT_FRACTION` of the memory
available when the run starts). What does not fit goes to a memory-mapped
file: the kernel keeps its hot pages in the page cache and drops them under
pressure, so a dataset larger than memory trains at disk speed instead of
failing or decoding every image every epoch.

Spill files are unlinked as soon as they are mapped (where the system allows
it): the space returns to the disk when the process ends, even after a crash,
and no stale file can be mistaken for a later run's images. A resumed run
decodes its images once more.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import InputError

if TYPE_CHECKING:  # torch loads with the first mapped file: the CLI parses sizes without it
    import torch

log = logging.getLogger(__name__)

DEFAULT_FRACTION = 0.5  # of the memory available at start: the rest is the model's, the OS's, other programs'
FALLBACK_BYTES = 2 << 30  # when the available memory cannot be read
SPILL_FOLDER = "spill"  # under the feature cache's root when there is no run folder

_UNITS = {"": 2**20, "b": 1, "k": 2**10, "kb": 10**3, "kib": 2**10, "m": 2**20, "mb": 10**6, "mib": 2**20,
          "g": 2**30, "gb": 10**9, "gib": 2**30, "t": 2**40, "tb": 10**12, "tib": 2**40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*$", re.IGNORECASE)


class DiskSpaceError(InputError, OSError):
    """Not enough free disk space to spill to; the message names the folder and the bytes needed."""


def parse_size(text: str) -> int:
    """Bytes from ``512M``, ``2G``, ``1.5GiB``, ``800MB`` (SI) or a plain number of MiB.

    K, M, G, T alone are binary (as ``free -h`` and ``docker --memory`` read them).
    """
    m = _SIZE.match(str(text))
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _UNITS:
        raise ValueError(f"expected a size such as 512M, 2G, 1.5GiB or a number of MiB, got {text!r}")
    return int(float(m.group(1)) * _UNITS[unit])


def human(n: float) -> str:
    """1.7 GiB, 512 MiB, 40 KiB."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            value = n / size
            return f"{value:.1f} {unit}" if value < 100 else f"{value:.0f} {unit}"
    return f"{int(n)} B"


def available_bytes() -> int | None:
    """Memory available to this process now: /proc/meminfo's MemAvailable, capped by a cgroup limit."""
    found = None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if found is None and hasattr(os, "sysconf"):
        try:
            found = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):
            pass
    # A container's limit is lower than what the host has free (cgroup v2).
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max":
            room = max(int(limit) - used, 0)
            found = room if found is None else min(found, room)
    except (OSError, ValueError):
        pass
    return found


def default_budget() -> int:
    """The budget when none is given: a fraction of the memory available now."""
    avail = available_bytes()
    return int(avail * DEFAULT_FRACTION) if avail else FALLBACK_BYTES


def resolve_budget(mib: int | None) -> int:
    """Bytes for a budget in MiB (a TrainConfig's ``memory_budget_mb``); None: the default."""
    return default_budget() if mib is None else int(mib) * 2**20


def check_free(folder: str | os.PathLike, need: int, what: str, free=None) -> None:
    """Refuse (:class:`DiskSpaceError`) to put ``need`` bytes of ``what`` in ``folder`` without the space.

    ``free``: the free bytes, when the caller knows them (tests); else ``shutil.disk_usage``.
    """
    folder = Path(folder)
    probe = folder
    while not probe.exists() and probe != probe.parent:  # the folder may not exist yet
        probe = probe.parent
    free = shutil.disk_usage(probe).free if free is None else free
    if need > free:
        raise DiskSpaceError(
            f"{folder}: not enough free disk space to memory-map {what}: {need:,} bytes ({human(need)}) "
            f"needed, {free:,} ({human(free)}) free; free some space, point --memory-budget higher, "
            f"or set TL_STUDIO_CACHE_DIR elsewhere"
        )


def spill_root() -> Path:
    """Where spill files go when no run folder is given: next to the feature cache."""
    from .features.store import default_root

    return default_root() / SPILL_FOLDER


def mapped_tensor(folder: str | os.PathLike | None, name: str, shape: tuple[int, ...], dtype: torch.dtype,
                  what: str) -> tuple[torch.Tensor, Path]:
    """A zero-filled tensor backed by a new file ``folder/name`` (MAP_SHARED), and its path.

    The file is sparse until written and unlinked once mapped (see the module
    docstring); the mapping lives as long as the tensor. Its pages are the
    page cache's (RssFile), not this process's anonymous memory.
    """
    import torch

    folder = Path(folder) if folder is not None else spill_root()
    item = torch.empty((), dtype=dtype).element_size()
    count = 1
    for s in shape:
        count *= int(s)
    need = count * item
    check_free(folder, need, what)
    made = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    fd, raw = tempfile.mkstemp(prefix=Path(name).stem + "-", suffix=Path(name).suffix, dir=folder)
    path = Path(raw)
    try:
        os.ftruncate(fd, max(need, 1))
    finally:
        os.close(fd)
    try:
        flat = torch.from_file(str(path), shared=True, size=max(count, 1), dtype=dtype)
    except Exception:
        path.unlink(missing_ok=True)
        raise
    tensor = flat[:count].view(shape)
    try:
        path.unlink()  # the mapping keeps the data; the space returns when it goes
    except OSError:  # a system that cannot unlink an open file: remove it with the tensor
        weakref.finalize(flat, lambda p=path: p.unlink(missing_ok=True))
    else:
        if made:  # leave no empty folder in a run
            try:
                folder.rmdir()
            except OSError:  # another file arrived meanwhile
                pass
    return tensor, path
