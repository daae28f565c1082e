"""Training hyper-parameters: one frozen dataclass, validated on creation.

A job keeps the config it was started with; edit a copy with
:func:`dataclasses.replace` (which validates again).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

from ..errors import InputError

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "onecycle", "constant")
BALANCE = ("none", "weights", "sampler")
CACHE = ("auto", "off")
CACHE_DTYPES = ("float32", "float16")
AUGMENT = ("none", "light", "strong")


class ConfigError(InputError, ValueError):
    """A hyper-parameter out of range; the message names the field."""


@dataclass(frozen=True)
class TrainConfig:
    # length and batching
    epochs: int = 5
    batch_size: int = 32
    min_batch_size: int = field(default=4, metadata={"help": "CUDA OOM halves the batch down to this"})
    # optimisation
    optimizer: str = "adamw"
    lr: float = 1e-3
    momentum: float = 0.9  # SGD only
    weight_decay: float = 0.01
    schedule: str = "cosine"
    warmup_epochs: float = 0.5
    label_smoothing: float = 0.1
    # stop when validation loss has not improved for this many epochs (0: never)
    early_stopping: int = 0
    seed: int = 0
    # data
    augment: str = "none"
    balance: str = "none"
    # the frozen-feature cache ("auto": used whenever it applies and fits)
    cache: str = "auto"
    cache_dtype: str = "float32"
    cache_budget_mb: int = 2048
    # hardware: "auto" picks CUDA, then MPS, then the CPU
    device: str = "auto"
    channels_last: bool | None = None  # None: on for CUDA
    amp: bool = True  # bf16 autocast on CUDA where supported, else fp16 + grad scaler
    # run frozen layers as a BatchNorm-folded, channels_last inference copy (train/extract.py)
    fold_frozen: bool = True
    # how often losses are copied off the device (never once per step)
    sync_every: int = 10
    # run directory checkpointing
    save_last: bool = True

    def __post_init__(self):
        def bad(name, why):
            raise ConfigError(f"{name}: {why}, got {getattr(self, name)!r}")

        for name in ("epochs", "batch_size", "min_batch_size", "sync_every", "cache_budget_mb", "early_stopping"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < (0 if name in ("early_stopping", "cache_budget_mb") else 1):
                bad(name, "must be a positive integer")
        if self.min_batch_size > self.batch_size:
            object.__setattr__(self, "min_batch_size", self.batch_size)
        for name in ("lr", "weight_decay", "momentum", "label_smoothing", "warmup_epochs"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                bad(name, "must be a finite, non-negative number")
        if self.lr <= 0:
            bad("lr", "must be positive")
        if self.label_smoothing >= 1:
            bad("label_smoothing", "must be below 1")
        for name, choices in (
            ("optimizer", OPTIMIZERS),
            ("schedule", SCHEDULES),
            ("balance", BALANCE),
            ("cache", CACHE),
            ("cache_dtype", CACHE_DTYPES),
            ("augment", AUGMENT),
        ):
            if getattr(self, name) not in choices:
                bad(name, f"must be one of {', '.join(choices)}")
        if not isinstance(self.device, str) or not (
            self.device in ("auto", "cpu", "mps", "cuda") or self.device.startswith("cuda:")
        ):
            bad("device", "must be auto, cpu, cuda, cuda:N or mps")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown training setting(s): {', '.join(unknown)}")
        return cls(**data)
