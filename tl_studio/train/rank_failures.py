"""Under torchrun: naming the rank whose failure ends the run, and the test hook that injects one.

A rank's own exception is left in the rendezvous store (which torchrun's
agent holds, so it outlives the ranks) before the rank exits; a rank whose
collective then fails reads it there. A rank killed by a signal leaves no
word: it is named by its pid (ranks on the same machine). torchrun's error
summary names the failure in any case, from the ``record``-wrapped entry point.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import time
from typing import TYPE_CHECKING

import torch.distributed as dist

from .errors import Stopped, TrainingFailed

if TYPE_CHECKING:
    from .distributed import Dist

# Test hook, read only here: "rank1:raise@step2" makes rank 1 raise at the top of training step 2
# (1-based, counted over the run), "rank1:kill@step2" kills it with SIGKILL there, "rank1:stop@step2"
# asks it (alone) to stop there. Tests cannot mock across processes; nothing else sets it.
ENV_FAULT = "TL_STUDIO_FAULT"
KEY_FAILED = "tl_studio/failed"
KEY_PID = "tl_studio/pid/{}"


def fault_point(step: int, stop_event=None) -> None:
    """The test hook (``TL_STUDIO_FAULT``, see above) at the top of training step ``step`` (1-based)."""
    spec = os.environ.get(ENV_FAULT)
    if not spec:
        return
    m = re.fullmatch(r"rank(\d+):(raise|kill|stop)@step(\d+)", spec.strip())
    if m is None or m[1] != os.environ.get("RANK") or int(m[3]) != step:
        return
    if m[2] == "stop" and stop_event is not None:
        stop_event.set()
        return
    if m[2] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise RuntimeError(f"{ENV_FAULT}: fault injected on rank {m[1]} at step {step}")


def store():
    from torch.distributed.distributed_c10d import _get_default_store

    return _get_default_store()


def _is_collective_failure(exc: BaseException) -> bool:
    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(
        s in text for s in ("gloo", "nccl", "connection closed", "connection reset", "timed out", "broken pipe"))


def _dead_peers(d: "Dist") -> list[str]:
    """Ranks on this machine whose process is gone (or a zombie): killed, or crashed without a word."""
    here, out, st = socket.gethostname(), [], store()
    for r in range(d.world_size):
        key = KEY_PID.format(r)
        if r == d.rank or not st.check([key]):
            continue
        host, _, pid = st.get(key).decode().rpartition(":")
        if host != here:
            continue
        try:
            with open(f"/proc/{pid}/stat") as fh:
                alive = fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
        except OSError:
            alive = False
        if not alive:
            out.append(f"rank {r} (pid {pid})")
    return out


def describe_failure(d: "Dist | None", exc: BaseException) -> str:
    """What the run's summary says about ``exc``. Under torchrun: a rank's own failure, which the others
    can then read from the store, or, for a collective that failed, which rank failed first and why."""
    own = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if d is None:
        return own
    with contextlib.suppress(Exception):
        st = store()
        if not _is_collective_failure(exc):
            if not st.check([KEY_FAILED]):
                st.set(KEY_FAILED, f"rank {d.rank}: {own}")
            return f"rank {d.rank}: {own}"
        for _ in range(20):  # the failing rank writes before it exits, so this rarely waits
            if st.check([KEY_FAILED]):
                return f"another rank failed: {st.get(KEY_FAILED).decode()} (here: {own})"
            dead = _dead_peers(d)
            if dead:
                return f"{', '.join(dead)} ended without an error of its own (killed by a signal?) (here: {own})"
            time.sleep(0.1)
    return f"rank {d.rank}: {own} (a collective failed: another rank failed or timed out; torchrun's error " \
           "summary names it)"


# torchrun's error summary calls the failure with the earliest timestamp the root cause, but it keeps
# timestamps in whole seconds and breaks ties by the lowest rank. So a rank that fails only because a
# peer failed, and exits within the same second, can be named in place of that peer. Such a rank waits
# this long before it exits. torchrun's agent polls every 0.1 s by default (--monitor-interval), so it
# sees the peer's exit first and ends the rest of the group.
FOLLOWER_GRACE_S = 3.0


def defer_to_failed_peer(d: "Dist | None") -> None:
    """Before a failed rank exits: wait (FOLLOWER_GRACE_S) when another rank failed first, so that torchrun
    names that rank as the root cause. Call it once the run's summary and logs are written."""
    if d is None:
        return
    with contextlib.suppress(Exception):
        st = store()
        first = st.get(KEY_FAILED).decode() if st.check([KEY_FAILED]) else ""
        if (first and not first.startswith(f"rank {d.rank}:")) or _dead_peers(d):
            time.sleep(FOLLOWER_GRACE_S)


@contextlib.contextmanager
def failures(d: "Dist | None"):
    """Name the failure in what propagates: a rank's own, or the peer whose failure broke a collective."""
    if d is None:
        yield
        return
    try:
        yield
    except Stopped:
        raise
    except Exception as exc:
        text = describe_failure(d, exc)
        if _is_collective_failure(exc):
            raise TrainingFailed(text) from exc
        raise
