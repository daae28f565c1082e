"""The files of a run folder, each written atomically and read back without trusting it.

    config.json        the plan (its one copy), hyper-parameters, seed, dataset hash and file lists, versions
    metrics.csv        one row per epoch      steps.csv   one row per training step
    summary.json       status (finished, stopped, failed), best_val_accuracy, best_epoch, epochs_run, ...
    model.safetensors  the best weights; class names and the plan's hash (``plan_sha256``) in its metadata
    last.pt            model, optimizer, epoch, step, RNG: for --resume (tensors only)

Every file is written atomically (temporary file, then rename). Loading never
unpickles code: weights are safetensors, and ``last.pt`` is read with
``torch.load(weights_only=True)`` with no fall-back. torch and safetensors
load inside the functions that write or read tensors, so listing runs
(``tl-studio runs``) starts in a fraction of a second.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import pickle
import platform
import re
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import pandas as pd
from safetensors import SafetensorError  # no torch: listing runs stays fast

from .. import atomic
from ..errors import InputError
from ..version import __version__

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

CONFIG, METRICS, STEPS, SUMMARY, WEIGHTS, LAST = (
    "config.json",
    "metrics.csv",
    "steps.csv",
    "summary.json",
    "model.safetensors",
    "last.pt",
)


class RunError(InputError, ValueError):
    """A run directory or checkpoint that cannot be used; the message names the file."""


@contextlib.contextmanager
def _naming(path: Path) -> Iterator[None]:
    """Any failure to write ``path`` (a full disk, a read-only folder) as one :class:`RunError`
    naming the file, instead of a chain of the writer's own errors (torch and
    safetensors wrap the OS error in theirs, without the file's name)."""
    try:
        yield
    except (OSError, RuntimeError, SafetensorError) as exc:
        text = str(exc).strip()
        code = re.search(r"\(os error (\d+)\)", text)  # safetensors' Rust I/O errors
        if isinstance(exc, OSError) and exc.strerror:
            why = exc.strerror
        elif code:
            why = os.strerror(int(code.group(1)))
        else:
            why = text.splitlines()[0] if text else type(exc).__name__
        raise RunError(f"{path}: cannot write ({why})") from None


def write_json(path: Path, data) -> None:
    """A JSON file of the run, written atomically; a failure names the file."""
    with _naming(path):
        atomic.write_json(path, data)


def versions() -> dict[str, str]:
    import torch
    import torchvision

    return {
        "tl_studio": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
    }


def plan_sha256(plan: dict) -> str:
    """The hash the weights carry of the plan in config.json: SHA-256 of its canonical JSON.

    Computed from the stored dict, not from a re-parsed :class:`Plan`, so that
    a later change in how a plan serialises cannot break an old run's match.
    """
    text = json.dumps(plan, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def all_finite(state: dict[str, torch.Tensor]) -> bool:
    """No NaN or inf in any floating tensor.

    One flat copy and one check per dtype and device rather than two ops per
    tensor: a model has hundreds of small tensors, and on a busy CPU each op's
    fixed cost, not its data, is what a per-epoch checkpoint paid for.
    """
    import torch

    groups: dict[tuple, list[torch.Tensor]] = {}
    for t in state.values():
        if t.is_floating_point() and t.numel():
            groups.setdefault((t.dtype, t.device), []).append(t.detach().reshape(-1))
    return all(bool(torch.cat(ts).isfinite().all()) for ts in groups.values())


def save_weights(path: Path, state: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file
    if not all_finite(state):
        # Never write a checkpoint from NaN/inf weights.
        raise RunError(f"{path.name}: refusing to save non-finite weights")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    with _naming(path), atomic.atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def load_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file, from one read of its bytes.

    ``safe_open`` reads the header and the tensor data through two separate
    opens of the path, so a concurrent atomic rewrite could pair one version's
    metadata with the next version's weights (a test caught exactly that). One
    ``read_bytes`` sees a single version of the file.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load as load_bytes

    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise RunError(f"{path}: no such weights file") from None
    except OSError as exc:
        raise RunError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        header_len = int.from_bytes(data[:8], "little")
        if len(data) < 8 or header_len > len(data) - 8:
            raise ValueError("truncated header")
        header = json.loads(data[8 : 8 + header_len])
        meta = header.get("__metadata__") or {}
        return load_bytes(data), meta
    except (SafetensorError, ValueError, UnicodeDecodeError, AttributeError) as exc:
        raise RunError(f"{path}: not a valid safetensors file ({exc})") from None


def save_last(path: Path, payload: dict) -> None:
    import torch

    with _naming(path), atomic.atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_last(path: Path) -> dict:
    """The resume checkpoint: tensors and plain data only, never code."""
    if not path.exists():
        raise RunError(f"{path}: no checkpoint to resume from")
    import torch

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RunError(f"{path}: refused to load (not a plain tensor checkpoint: {first})") from None
    if not isinstance(payload, dict) or "model" not in payload:
        raise RunError(f"{path}: not a tl-studio checkpoint")
    return payload


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{path}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunError(f"{path}: not valid JSON ({exc})") from None


def write_tables(run_dir: Path, tables: dict[str, pd.DataFrame]) -> None:
    for name, fname in (("epochs", METRICS), ("steps", STEPS)):
        with _naming(run_dir / fname), atomic.atomic_path(run_dir / fname) as tmp:
            tables[name].to_csv(tmp, index=False)


def read_tables(run_dir: Path) -> dict[str, pd.DataFrame | None]:
    out = {}
    for name, fname in (("epochs", METRICS), ("steps", STEPS)):
        p = run_dir / fname
        out[name] = pd.read_csv(p) if p.exists() and p.stat().st_size else None
    return out

