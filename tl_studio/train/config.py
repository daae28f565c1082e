"""Training hyper-parameters: one frozen dataclass, validated on creation.

A job keeps the config it was started with; edit a copy with
:func:`dataclasses.replace` (which validates again).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field, fields

from ..errors import InputError

log = logging.getLogger(__name__)

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "onecycle", "constant")
BALANCE = ("none", "weights", "sampler")
CACHE = ("auto", "off")
CACHE_DTYPES = ("float32", "float16")
AUGMENT = ("none", "light", "strong")
HEAD_SOLVERS = ("auto", "sgd")

# Every number a job takes is checked against a range before it starts: a value past
# these is a typo or an attack (a seed of 2**80 used to fail inside torch, after the run
# folder was made; a batch of 10**9 would take the server down), never a setting.
INT_RANGES = {
    "epochs": (1, 10_000),
    "batch_size": (1, 65_536),
    "min_batch_size": (1, 65_536),
    "early_stopping": (0, 10_000),
    # What torch.manual_seed and NumPy's generators (the data split) both accept.
    "seed": (0, 2**64 - 1),
    "sync_every": (1, 100_000),
}
MAX_BUDGET_MB = 1 << 24  # 16 TiB
# Settings older versions wrote that this one reads and drops (the log says so).
RETIRED = {"cache_budget_mb": "the feature cache's own budget; --memory-budget (memory_budget_mb) now covers it"}
# name: (low, high, low excluded, high excluded)
FLOAT_RANGES = {
    "lr": (0.0, 10.0, True, False),
    "momentum": (0.0, 1.0, False, True),
    "weight_decay": (0.0, 10.0, False, False),
    "warmup_epochs": (0.0, 10_000.0, False, False),
    "label_smoothing": (0.0, 1.0, False, True),
}


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
    # "auto": a head on frozen, cached inputs is fitted to convergence (L-BFGS, L2 by
    # cross-validation on the training split) instead of trained for epochs, and a plan that
    # trains body layers starts from such a fitted head; "sgd": epochs for every head
    head_solver: str = "auto"
    # data
    augment: str = "none"
    balance: str = "none"
    # the frozen-feature cache ("auto": used whenever it applies and fits)
    cache: str = "auto"
    cache_dtype: str = "float32"
    # One budget for what grows with the data, the decoded images and the feature cache, in MiB
    # (None: half the memory available at the start, tl_studio/memory.py); beyond it they are
    # memory-mapped files. Where the run is, not what it is: the CLI sets it on every start.
    memory_budget_mb: int | None = None
    # hardware: "auto" picks CUDA, then MPS, then the CPU
    device: str = "auto"
    channels_last: bool | None = None  # None: on for CUDA
    amp: bool = True  # bf16 autocast on CUDA where supported, else fp16 + grad scaler
    # run frozen layers as a BatchNorm-folded, channels_last inference copy (features/fold.py)
    fold_frozen: bool = True
    # how often losses are copied off the device (never once per step)
    sync_every: int = 10
    # run directory checkpointing
    save_last: bool = True

    def __post_init__(self):
        def bad(name, why):
            raise ConfigError(f"{name}: {why}, got {getattr(self, name)!r}")

        for name, (lo, hi) in INT_RANGES.items():
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                bad(name, f"must be a whole number from {lo} to {hi}")
        budget = self.memory_budget_mb
        if budget is not None and (not isinstance(budget, int) or isinstance(budget, bool)
                                   or not 0 <= budget <= MAX_BUDGET_MB):
            bad("memory_budget_mb", f"must be null (automatic) or a whole number of MiB from 0 to {MAX_BUDGET_MB}")
        if self.min_batch_size > self.batch_size:
            object.__setattr__(self, "min_batch_size", self.batch_size)
        for name, (lo, hi, low_open, high_open) in FLOAT_RANGES.items():
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                bad(name, "must be a finite number")
            if v < lo or (low_open and v == lo) or v > hi or (high_open and v == hi):
                bad(name, f"must be in {'(' if low_open else '['}{lo:g}, {hi:g}{')' if high_open else ']'}")
        for name in ("amp", "fold_frozen", "save_last"):
            if not isinstance(getattr(self, name), bool):
                bad(name, "must be true or false")
        if self.channels_last is not None and not isinstance(self.channels_last, bool):
            bad("channels_last", "must be true, false or null (automatic)")
        for name, choices in (
            ("optimizer", OPTIMIZERS),
            ("schedule", SCHEDULES),
            ("balance", BALANCE),
            ("cache", CACHE),
            ("cache_dtype", CACHE_DTYPES),
            ("augment", AUGMENT),
            ("head_solver", HEAD_SOLVERS),
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
        data = dict(data)
        for name, why in RETIRED.items():
            if name in data:
                log.info("%s=%r is no longer used (%s)", name, data.pop(name), why)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown training setting(s): {', '.join(unknown)}")
        return cls(**data)
