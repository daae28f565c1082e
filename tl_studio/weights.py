"""Where pretrained weights are, and fetching them without ever hanging.

torchvision's own ``get_state_dict`` downloads through ``urlopen`` with no
timeout, so an offline machine with a half-open network can hang forever.
We look in the same cache torchvision uses (``torch.hub.get_dir()``), and
when a download is needed we do it ourselves with a short connect timeout,
write it atomically, and check torchvision's hash prefix in the file name.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

import torch

from .atomic import atomic_path
from .errors import InputError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = float(os.environ.get("TL_STUDIO_DOWNLOAD_TIMEOUT", "5"))


class WeightsUnavailable(InputError, RuntimeError):
    """Pretrained weights are neither embedded nor cached and cannot be fetched."""


def offline() -> bool:
    """True when the user (or a test) forbids network access outright."""
    return os.environ.get("TL_STUDIO_OFFLINE", "") not in ("", "0") or os.environ.get(
        "HF_HUB_OFFLINE", ""
    ) not in ("", "0")


def cache_file(url: str) -> Path:
    """The file torchvision would use for this URL."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def _hash_prefix(url: str) -> str | None:
    # torchvision names files "<name>-<first hex digits of sha256>.pth".
    m = re.search(r"-([a-f0-9]{6,})\.", os.path.basename(url))
    return m.group(1) if m else None


def download(url: str, dest: Path, timeout: float = CONNECT_TIMEOUT_S) -> Path:
    if offline():
        raise WeightsUnavailable(
            f"{dest.name} is not in the local cache ({dest.parent}) and TL_STUDIO_OFFLINE is set"
        )
    log.info("downloading %s to %s", url, dest)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, atomic_path(dest) as tmp:
            digest = hashlib.sha256()
            with open(tmp, "wb") as fh:
                while chunk := resp.read(1 << 20):
                    digest.update(chunk)
                    fh.write(chunk)
            prefix = _hash_prefix(url)
            if prefix and not digest.hexdigest().startswith(prefix):
                raise WeightsUnavailable(f"{url}: downloaded file fails its hash check")
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise WeightsUnavailable(
            f"{dest.name} is not in the local cache ({dest.parent}) and could not be "
            f"downloaded from {url}: {reason}. Connect once to fetch it, copy the file "
            f"there by hand, or use the embedded efficientnet_lite0."
        ) from exc
    return dest


def load_state_dict(url: str) -> dict[str, torch.Tensor]:
    """A torchvision state dict from the cache, downloading it if allowed."""
    path = cache_file(url)
    if not path.exists():
        download(url, path)
    # Tensors only: a cached file is still never allowed to run code.
    return torch.load(path, map_location="cpu", weights_only=True)
