"""Where feature sets are kept: a few in memory, the rest on disk, least recently used first out.

The disk cache lives under ``$TL_STUDIO_CACHE_DIR`` (default
``tl-studio/features`` in ``$XDG_CACHE_HOME``, else ``~/.cache``); in shared
mode each workspace has its own folder, deleted with it, so no cache is ever
shared between workspaces. Each entry is one safetensors file named by its
key (:func:`.featureset.feature_key`). The folder has a size cap
(``$TL_STUDIO_CACHE_MB``, default 4096): writing past it removes the least
recently used entries first, and an entry that would leave less than
:data:`MIN_FREE_BYTES` free on the disk is kept in memory only, with a
warning. A file that does not read back as what it claims is deleted and
counts as a miss.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import shutil
import threading
import time
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..atomic import atomic_path
from .featureset import FORMAT, FeatureSet

log = logging.getLogger(__name__)

ENV_DIR, ENV_CAP = "TL_STUDIO_CACHE_DIR", "TL_STUDIO_CACHE_MB"
DEFAULT_CAP_MB = 4096
MIN_FREE_BYTES = 512 * 2**20
MEMORY_ENTRIES = 2  # feature sets kept in this process (each folder separately)
SUFFIX = ".safetensors"

_memory: collections.OrderedDict[tuple[str, str], FeatureSet] = collections.OrderedDict()
_memory_lock = threading.Lock()


def default_root() -> Path:
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tl-studio" / "features"


def default_cap_bytes() -> int:
    raw = os.environ.get(ENV_CAP, str(DEFAULT_CAP_MB))
    try:
        mb = float(raw)
    except ValueError:
        raise ValueError(f"{ENV_CAP}: expected a number of megabytes, got {raw!r}") from None
    return int(mb * 2**20)


class FeatureStore:
    def __init__(self, root: str | os.PathLike | None = None, cap_bytes: int | None = None, *,
                 writes: bool = True):
        self.root = Path(root) if root is not None else default_root()
        # False: reads the folder, keeps new sets in memory only (torchrun's ranks other than 0)
        self.writes = writes
        self.cap_bytes = default_cap_bytes() if cap_bytes is None else int(cap_bytes)

    def path(self, key: str) -> Path:
        return self.root / f"{key}{SUFFIX}"

    # ---- reading --------------------------------------------------------------------------
    def get(self, key: str) -> FeatureSet | None:
        """The feature set for ``key`` from memory or disk, or None (a miss)."""
        mem = (str(self.root.resolve()), key)
        with _memory_lock:
            if mem in _memory:
                _memory.move_to_end(mem)
                return _memory[mem]
        fs = self._load(key)
        if fs is not None:
            self._remember(fs)
        return fs

    def _load(self, key: str) -> FeatureSet | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            tensors = load_file(str(path))
            with safe_open(str(path), framework="pt") as fh:
                meta = json.loads(fh.metadata()["tl_studio"])
            if meta.get("format") != FORMAT or meta.get("key") != key:
                raise ValueError(f"format {meta.get('format')!r}, key {meta.get('key')!r}")
            pooled, widths = tensors["pooled"], meta["widths"]
            if pooled.ndim != 2 or pooled.shape[1] != sum(widths) or tensors["logits"].shape[0] != pooled.shape[0]:
                raise ValueError(f"shapes {tuple(pooled.shape)} / {tuple(tensors['logits'].shape)} "
                                 f"do not match {len(widths)} layers")
        except (OSError, SafetensorError, KeyError, ValueError, TypeError, json.JSONDecodeError) as exc:
            log.warning("feature cache %s: unreadable (%s); removed, the features are computed again", path, exc)
            path.unlink(missing_ok=True)
            return None
        os.utime(path)  # least recently *used*
        layers, at, views = meta["layers"], 0, {}
        for name, w in zip(layers, widths):
            views[name] = pooled[:, at:at + w]
            at += w
        return FeatureSet(key=key, model=meta["model"], fingerprint=meta["fingerprint"], layers=tuple(layers),
                          pooled=views, logits=tensors["logits"], bn_kl=tuple(meta["bn_kl"]),
                          bn_rows=int(meta["bn_rows"]), meta={"loaded_from": str(path)})

    # ---- writing --------------------------------------------------------------------------
    def put(self, fs: FeatureSet) -> Path | None:
        """Keep ``fs`` in memory and, where the cap and the free space allow, on disk."""
        self._remember(fs)
        if not self.writes:
            return None
        pooled = torch.cat([fs.pooled[n] for n in fs.layers], dim=1).contiguous()
        need = pooled.nbytes + fs.logits.nbytes
        if need > self.cap_bytes:
            log.warning("feature cache: %.0f MB exceeds the cache's cap of %.0f MB (%s); kept in memory only",
                        need / 2**20, self.cap_bytes / 2**20, ENV_CAP)
            return None
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(self.root).free
        except OSError as exc:
            log.warning("feature cache %s: not writable (%s); kept in memory only", self.root, exc)
            return None
        if free - need < MIN_FREE_BYTES:
            log.warning("feature cache %s: %.0f MB needed but only %.0f MB free; kept in memory only",
                        self.root, need / 2**20, free / 2**20)
            return None
        self._evict(self.cap_bytes - need)
        meta = {"format": FORMAT, "key": fs.key, "model": fs.model, "fingerprint": fs.fingerprint,
                "layers": list(fs.layers), "widths": [fs.width(n) for n in fs.layers], "bn_kl": list(fs.bn_kl),
                "bn_rows": fs.bn_rows, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        dest = self.path(fs.key)
        try:
            with atomic_path(dest) as tmp:
                save_file({"pooled": pooled, "logits": fs.logits.contiguous()}, str(tmp),
                          metadata={"tl_studio": json.dumps(meta)})
        except OSError as exc:
            log.warning("feature cache %s: could not write (%s); kept in memory only", dest, exc)
            return None
        return dest

    def _remember(self, fs: FeatureSet) -> None:
        with _memory_lock:
            _memory[(str(self.root.resolve()), fs.key)] = fs
            _memory.move_to_end((str(self.root.resolve()), fs.key))
            mine = [k for k in _memory if k[0] == str(self.root.resolve())]
            for k in mine[:-MEMORY_ENTRIES]:
                del _memory[k]

    def _evict(self, keep_bytes: int) -> None:
        """Remove least recently used entries until the folder holds at most ``keep_bytes``."""
        entries = sorted(self._files(), key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in entries)
        for p in entries:
            if total <= keep_bytes:
                break
            total -= p.stat().st_size
            p.unlink(missing_ok=True)
            log.info("feature cache: evicted %s (least recently used)", p.name)

    # ---- listing --------------------------------------------------------------------------
    def _files(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return [p for p in self.root.iterdir() if p.is_file() and p.suffix == SUFFIX and not p.name.startswith(".")]

    def entries(self) -> list[dict]:
        """One row per cached feature set, most recently used first."""
        rows = []
        for p in self._files():
            row = {"key": p.stem[:12], "model": "?", "images": None, "layers": None,
                   "megabytes": round(p.stat().st_size / 2**20, 2),
                   "last_used": time.strftime("%Y-%m-%d %H:%M", time.localtime(p.stat().st_mtime)),
                   "path": str(p)}
            try:
                with safe_open(str(p), framework="pt") as fh:
                    meta = json.loads(fh.metadata()["tl_studio"])
                    row.update(model=meta["model"], layers=len(meta["layers"]),
                               images=int(fh.get_slice("logits").get_shape()[0]))
            except Exception as exc:  # noqa: BLE001 - listing shows what it can
                row["model"] = f"unreadable: {exc}"
            rows.append(row)
        return sorted(rows, key=lambda r: r["last_used"], reverse=True)

    def clear(self) -> tuple[int, int]:
        """Delete every entry (and forget the ones in memory); returns (files, bytes)."""
        files = self._files()
        size = sum(p.stat().st_size for p in files)
        for p in files:
            p.unlink(missing_ok=True)
        with _memory_lock:
            for k in [k for k in _memory if k[0] == str(self.root.resolve())]:
                del _memory[k]
        return len(files), size
