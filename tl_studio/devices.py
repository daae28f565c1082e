"""Choosing the compute device and its precision: the one place that decides.

Training, the strategy's feature passes, timing and the CLI all ask
:func:`resolve`; the job queue keys on :func:`slot_key`.
"""

from __future__ import annotations

import contextlib
import functools

import torch

from .errors import InputError


class DeviceError(InputError, ValueError):
    pass


def resolve(name: str | torch.device | None = "auto") -> torch.device:
    """"auto" (or None) picks CUDA, then Apple MPS, then the CPU; an explicit choice is checked."""
    if name is None or name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError("device: cuda was asked for but no CUDA GPU is available")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        elif dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device: {name} does not exist ({torch.cuda.device_count()} GPU(s))")
    if dev.type == "mps" and not _mps_available():
        raise DeviceError("device: mps was asked for but Apple MPS is not available")
    return dev


def choices() -> list[str]:
    """What a device picker offers here: auto, the CPU, each GPU, MPS where present."""
    out = ["auto", "cpu"]
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if _mps_available():
        out.append("mps")
    return out


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def slot_key(dev: torch.device) -> str:
    """One job at a time runs on each key: each GPU, or the CPU."""
    return f"cuda:{dev.index or 0}" if dev.type == "cuda" else dev.type


def amp_dtype(dev: torch.device) -> torch.dtype | None:
    """bf16 where the GPU supports it, else fp16 (with a grad scaler); None on CPU/MPS."""
    if dev.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(dev: torch.device, dtype: torch.dtype | None):
    """Mixed precision on ``dev`` at ``dtype``; nothing when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(dev.type, dtype=dtype)


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 dot products (AVX512-BF16 or AMX).

    Without them bf16 autocast on the CPU is emulated and slower than fp32.
    """
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as fh:
            flags = fh.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def describe(dev: torch.device) -> str:
    if dev.type == "cuda":
        return f"{dev} ({torch.cuda.get_device_name(dev)})"
    if dev.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return str(dev)
