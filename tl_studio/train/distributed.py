"""Training on several processes: DistributedDataParallel under torchrun.

``torchrun --nproc_per_node N -m tl_studio train DATA ...`` (one machine or
several, with torchrun's c10d rendezvous) starts N copies of the CLI; the CLI
alone calls :func:`init` and hands the :class:`Dist` to the trainer. The
engine never reads torchrun's environment to decide to go distributed, so the
app's jobs (threads of its process) never do, whatever the environment.

* Backend: ``nccl`` on CUDA (each rank takes ``LOCAL_RANK``'s GPU), ``gloo``
  on the CPU. Every collective times out after :func:`timeout` seconds, so a
  rank that hangs or dies never blocks the others for ever.
* Data: every rank draws the same seeded permutation per epoch (epoch.py's
  ``_order``) and takes its slice of each global batch (:func:`split_epoch`):
  a step's global batch is the same images as in a single-process run, and
  each rank's loss is weighted so that DDP's mean of the ranks' gradients is
  the gradient of the global batch's mean loss.
* Metrics are summed over the ranks (:func:`all_sum`) so every rank logs and
  decides (best epoch, early stopping, a non-finite loss, a stop) on the same
  global numbers; validation is sharded.
* BatchNorm: on CUDA, BatchNorm layers that train become SyncBatchNorm.
  PyTorch refuses it on CPU modules, so under gloo they keep per-rank
  statistics (a WARNING says so). The plan's ``bn`` "eval" avoids the question.
* Failures (rank_failures.py): a rank's own exception is left in the
  rendezvous store for the others to name; a peer that died is named by its pid.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import warnings
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from .. import devices
from ..devices import DeviceError
from .rank_failures import ENV_FAULT, KEY_PID, defer_to_failed_peer, describe_failure, failures, fault_point, store

# The failure helpers live in rank_failures.py; callers reach them here, with the rest.
__all__ = [
    "DEFAULT_TIMEOUT", "Dist", "ENV_FAULT", "ENV_TIMEOUT", "FeatureShare", "all_sum", "barrier",
    "defer_to_failed_peer", "describe_failure", "enter_phase", "env_rank", "failures", "fault_point", "feature_share",
    "gather_cache", "gather_split", "init", "launched", "loss_weight", "record", "same_everywhere",
    "split_epoch", "split_rows", "teardown", "terminate_as_interrupt", "timeout", "window"
]

log = logging.getLogger(__name__)

ENV_TIMEOUT = "TL_STUDIO_DDP_TIMEOUT"  # seconds a collective may wait (default DEFAULT_TIMEOUT)
DEFAULT_TIMEOUT = 60.0
_TORCHRUN = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class Dist:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes the run folder, logs and prints."""
        return self.rank == 0


def launched(env=None) -> bool:
    """Whether torchrun started this process as one of several workers."""
    env = os.environ if env is None else env
    return all(k in env for k in _TORCHRUN) and int(env["WORLD_SIZE"]) > 1


def env_rank(env=None) -> int:
    """This process's rank under torchrun (0 otherwise): for quieting the others before :func:`init`."""
    env = os.environ if env is None else env
    return int(env.get("RANK", "0")) if launched(env) else 0


def timeout() -> timedelta:
    raw = os.environ.get(ENV_TIMEOUT, str(DEFAULT_TIMEOUT))
    try:
        seconds = float(raw)
    except ValueError:
        raise DeviceError(f"{ENV_TIMEOUT}: expected seconds, got {raw!r}") from None
    return timedelta(seconds=seconds)


def init(device_name: str = "auto") -> Dist:
    """Join torchrun's process group: nccl with ``LOCAL_RANK``'s GPU, else gloo on the CPU."""
    rank, world, local = (int(os.environ[k]) for k in _TORCHRUN)
    dev = devices.resolve(device_name)
    if dev.type == "cuda":
        if local >= torch.cuda.device_count():
            raise DeviceError(f"device: LOCAL_RANK {local} but this machine has {torch.cuda.device_count()} GPU(s); "
                              "torchrun --nproc_per_node must not exceed them")
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
        backend = "nccl"
    elif dev.type == "cpu":
        backend = "gloo"
    else:
        raise DeviceError(f"device: torchrun training runs on CUDA (nccl) or the CPU (gloo), not {dev.type}")
    dist.init_process_group(backend, timeout=timeout(), **({"device_id": dev} if dev.type == "cuda" else {}))
    with contextlib.suppress(Exception):  # only ever used to name a rank that died
        store().set(KEY_PID.format(rank), f"{socket.gethostname()}:{os.getpid()}")
    log.info("torchrun: %d processes (%s), rank %d on %s", world, backend, rank, dev)
    return Dist(rank, world, local, dev, backend)


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        with contextlib.suppress(Exception):  # a peer already gone: nothing left to tear down cleanly
            dist.destroy_process_group()


def record(fn):
    """The entry point under torchrun: its exception goes to torchrun's error summary (rank, type, message)."""
    from torch.distributed.elastic.multiprocessing.errors import record as _record

    return _record(fn)


def terminate_as_interrupt() -> None:
    """torchrun ends the other workers with SIGTERM when one fails: let them finish like a Ctrl-C (write
    the run's state and say why) within torchrun's grace period, instead of dying at once."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)


# ---- data ------------------------------------------------------------------------------------
def split_epoch(order: torch.Tensor, batch_size: int, d: Dist | None) -> tuple[torch.Tensor, int, list[int]]:
    """(this rank's images in order, its batch size per step, each step's global batch size).

    Global batch b is ``order[b*bs:(b+1)*bs]``, split in rank order. The last,
    partial batch is split as evenly as it goes; one with fewer images than
    ranks is left out (a rank would have none to run).
    """
    n = len(order)
    if d is None:
        return order, batch_size, [min(batch_size, n - i) for i in range(0, n, batch_size)]
    w = d.world_size
    full, rest = divmod(n, batch_size)
    if rest and rest < w:
        log.debug("the last batch (%d images < %d ranks) is left out", rest, w)
        rest = 0
    per = batch_size // w
    body = order[: full * batch_size].view(full, w, per)[:, d.rank].reshape(-1)
    tail = order[full * batch_size: full * batch_size + rest].tensor_split(w)[d.rank] if rest else order[:0]
    return torch.cat([body, tail]), per, [batch_size] * full + ([rest] if rest else [])


def split_rows(rows: torch.Tensor, d: Dist | None) -> torch.Tensor:
    """This rank's contiguous share of ``rows`` (all of them in a single process)."""
    return rows if d is None else rows.tensor_split(d.world_size)[d.rank]


def loss_weight(d: Dist | None, n_local: int, n_global: int) -> float:
    """Factor on a rank's mean loss so that DDP's mean over ranks is the global batch's mean loss."""
    return 1.0 if d is None else n_local * d.world_size / n_global


def all_sum(d: Dist | None, t: torch.Tensor) -> torch.Tensor:
    """``t`` summed over the ranks (``t`` itself in a single process)."""
    if d is None:
        return t
    t = t.detach().clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def window(trainer, losses: list[torch.Tensor]) -> tuple[list[torch.Tensor], bool]:
    """A window of step losses summed over the ranks, and whether any rank was asked to stop.

    One collective per window (``sync_every`` steps), where the losses are copied off anyway: every
    rank stops at the same step, as a rank that stopped alone would leave the others in a collective.
    """
    asked = trainer.stop_event is not None and trainer.stop_event.is_set()
    flag = torch.tensor([float(asked)], device=trainer.device)
    summed = all_sum(trainer.dist, torch.cat([torch.stack(losses).float(), flag]))
    return list(summed[:-1].unbind()), bool(summed[-1].item() > 0)


def same_everywhere(d: Dist | None, value):
    """Rank 0's ``value`` on every rank (a picklable object)."""
    if d is None:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(d: Dist | None) -> None:
    if d is not None:
        dist.barrier()


GATHER_BYTES = 64 << 20  # rows of a memory-mapped cache gathered per round (about 64 MiB of them)


def _gather_rows(d: Dist, t: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """Every rank's rows of ``t`` (``counts[r]`` from rank r), concatenated in rank order."""
    dtype = t.dtype
    # gloo's collectives are only sure for float32 here; the round trip is exact for float16/bfloat16
    wire = torch.float32 if d.backend == "gloo" else dtype
    pad = max(counts)
    buf = torch.zeros((pad, *t.shape[1:]), dtype=wire, device=d.device)
    buf[: len(t)] = t.to(device=d.device, dtype=wire)
    parts = [torch.empty_like(buf) for _ in range(d.world_size)]
    dist.all_gather(parts, buf)
    return torch.cat([p[:c] for p, c in zip(parts, counts)]).to(device=t.device, dtype=dtype)


def gather_split(d: Dist | None, t: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The rows of every rank's ``split_rows(rows, d)`` share (``t``: this rank's), in order."""
    if d is None:
        return t
    return _gather_rows(d, t, [len(s) for s in rows.tensor_split(d.world_size)])


def gather_cache(d: Dist, cache, rows: torch.Tensor, spill_dir=None):
    """The whole feature cache from each rank's shard of ``rows`` (built from ``split_rows(rows, d)``):
    every rank needs every row, as its slices of the next epochs' batches can be any images.

    A cache beyond the memory budget stays a memory-mapped file: it is gathered a block of rows at a
    time into one, so no rank ever holds the whole cache in memory.
    """
    from .cache import FeatureCache, allocate_like

    counts = [len(s) for s in rows.tensor_split(d.world_size)]
    positions = {int(i): r for r, i in enumerate(rows.tolist())}
    if not cache.mapped:
        channels_last = cache.h.dim() == 4 and cache.h.is_contiguous(memory_format=torch.channels_last)
        h = _gather_rows(d, cache.h.contiguous(), counts)
        if channels_last:
            h = h.contiguous(memory_format=torch.channels_last)
        feats = [_gather_rows(d, f.contiguous(), counts) for f in cache.feats]
        return FeatureCache(cache.k, positions, h, feats)
    mine = [cache.h, *cache.feats]
    whole = [allocate_like(t, len(rows), spill_dir) for t in mine]
    starts = [sum(counts[:r]) for r in range(d.world_size)]
    block = max(1, GATHER_BYTES // max(1, sum(t[:1].nbytes for t in mine)))
    for first in range(0, max(counts), block):
        span = [max(0, min(c - first, block)) for c in counts]
        for src, dst in zip(mine, whole):
            got = _gather_rows(d, src[first:first + span[d.rank]].contiguous(), span)
            for r, (start, n) in enumerate(zip(starts, span)):
                offset = sum(span[:r])
                dst[start + first:start + first + n] = got[offset:offset + n]
    return FeatureCache(cache.k, positions, whole[0], whole[1:], device=cache.device, mapped=True)


class FeatureShare:
    """The ranks' split of the frozen network's one pass (features/extract.py): rank r runs the r-th part
    of the images outside the BatchNorm sample, then every rank gathers every row."""

    def __init__(self, d: Dist):
        self.d = d

    def everyone(self, flag: bool) -> bool:
        """Whether ``flag`` holds on every rank."""
        return all_sum(self.d, torch.tensor([float(not flag)], device=self.d.device)).item() == 0

    def mine(self, rows: list[int]) -> list[int]:
        return rows[len(rows) * self.d.rank // self.d.world_size: len(rows) * (self.d.rank + 1) // self.d.world_size]

    def gather(self, out: torch.Tensor, rows: list[int]) -> None:
        """Fill ``out``'s ``rows`` (computed by their ranks) on every rank."""
        if not rows:  # every image was in the BatchNorm sample, which every rank ran
            return
        w = self.d.world_size
        counts = [len(rows) * (r + 1) // w - len(rows) * r // w for r in range(w)]
        idx = torch.as_tensor(rows, dtype=torch.long)
        out[idx] = _gather_rows(self.d, out[torch.as_tensor(self.mine(rows), dtype=torch.long)], counts)


def feature_share(d: Dist | None) -> FeatureShare | None:
    return None if d is None else FeatureShare(d)


# ---- the model ---------------------------------------------------------------------------------
class _TrainForward(nn.Module):
    """The training forward DDP wraps: the whole model, or its suffix after a frozen (cached) prefix."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, feats=None, k=None):
        return self.model(x) if k is None else self.model.suffix(x, feats, k)


def _sync_batchnorm(model, d: Dist) -> None:
    """SyncBatchNorm for BatchNorm that trains, on CUDA; under gloo a warning that its statistics stay per rank."""
    bn_type = nn.modules.batchnorm._BatchNorm
    if model.plan.bn == "eval":
        return
    trained = [(parent, name, m) for parent in model.body.modules() for name, m in parent.named_children()
               if isinstance(m, bn_type) and not isinstance(m, nn.SyncBatchNorm)
               and any(p.requires_grad for p in m.parameters(recurse=False))]
    if not trained:
        return
    if d.device.type != "cuda":
        if d.main:
            log.warning("gloo: %d BatchNorm layer(s) train with per-rank statistics (SyncBatchNorm needs CUDA); "
                        'the plan\'s "bn": "eval" keeps them fixed instead', len(trained))
        return
    for parent, name, m in trained:
        # The same parameter and buffer tensors move over: the optimizer's references stay valid.
        setattr(parent, name, nn.SyncBatchNorm.convert_sync_batchnorm(m))


def enter_phase(trainer) -> None:
    """After a phase change (what trains changed): SyncBatchNorm, and a new DDP wrapper over the trainable
    parameters. Constructing it broadcasts rank 0's weights, so every rank starts the phase identical."""
    d = trainer.dist
    if d is None:
        return
    from torch.nn.parallel import DistributedDataParallel

    _sync_batchnorm(trainer.model, d)
    # Frozen layers on the CPU run channels-last, so some gradients come in other strides than DDP's
    # buckets: a copy, not an error (the warning would print on every rank).
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    with warnings.catch_warnings():
        # torch 2.14 deprecates broadcast_buffers but says to keep it while rank-local buffers are wanted.
        warnings.simplefilter("ignore", FutureWarning)
        trainer.inputs.ddp = DistributedDataParallel(
            _TrainForward(trainer.model),
            device_ids=[d.device.index] if d.device.type == "cuda" else None,
            # BatchNorm statistics stay each rank's own (nothing to sync under "bn": "eval" or frozen BatchNorm).
            broadcast_buffers=False,
        )
