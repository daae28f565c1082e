"""``run.lock``: which process is writing a run folder, so that a killed one can be told apart.

A trainer holds the lock for as long as it writes the folder. The file says
who (host, pid, the process's start time) and when (start, heartbeat); a
thread renews the heartbeat every :data:`HEARTBEAT_SECONDS`. The lock is
*live* while its writer is alive:

* on this host, when its pid runs and is the same process (its start time,
  read from ``/proc``, matches; where that cannot be read, its heartbeat must
  also be recent). A stopped (``SIGSTOP``) or busy writer stays live, however
  long its epoch; a pid reused after a kill does not;
* on another host (a shared file system), when its heartbeat is recent.

A lock that is not live belongs to a writer that was killed: whoever opens the
run next removes it, with the temporary files the writer left (see
:func:`clean_temp`).
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import socket
import tempfile
import threading
import time
from pathlib import Path

from ..atomic import write_json
from .files import RunError

log = logging.getLogger(__name__)

LOCK = "run.lock"
HEARTBEAT_SECONDS = 30.0
STALE_SECONDS = 10 * HEARTBEAT_SECONDS

# Run folders this process has locked (a second trainer on one of them is refused).
_mine: set[Path] = set()
_mine_lock = threading.Lock()


class RunLocked(RunError):
    """Another live process (or another job in this one) is writing the run folder."""


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22; the command name (field 2) may hold spaces and parentheses, so count from its end.
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def _pid_runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    except (OSError, OverflowError, ValueError):
        return False
    return True


def read_lock(run_dir: str | Path) -> dict | None:
    """The lock's contents, None when there is none; an unreadable one reads as {} (not live)."""
    try:
        data = json.loads((Path(run_dir) / LOCK).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def is_live(info: dict | None, now: float | None = None) -> bool:
    """Whether the writer a lock names is still alive (see the module's description)."""
    if not info:
        return False
    now = time.time() if now is None else now
    try:
        heartbeat = float(info.get("heartbeat", 0))
        pid = int(info.get("pid", -1))
    except (TypeError, ValueError):
        return False
    recent = now - heartbeat <= STALE_SECONDS
    if info.get("host") != socket.gethostname():
        return recent
    if pid <= 0 or not _pid_runs(pid):
        return False
    started = info.get("process_start")
    current = _process_start(pid)
    if started and current:
        return started == current
    return recent


def live_lock(run_dir: str | Path) -> dict | None:
    """The lock of a live writer of ``run_dir``, else None."""
    info = read_lock(run_dir)
    return info if is_live(info) else None


def is_temp(name: str) -> bool:
    """A temporary file of an interrupted atomic write: ``.<name>.*.tmp*``, or ``.tmp*`` (safetensors' own)."""
    return name.startswith(".tmp") or fnmatch.fnmatchcase(name, ".?*.*.tmp*")


def clean_temp(run_dir: str | Path) -> list[str]:
    """Remove the temporary files an interrupted writer left in the run folder itself (not below it)."""
    removed = []
    try:
        entries = list(os.scandir(run_dir))
    except OSError:
        return removed
    for entry in entries:
        if is_temp(entry.name) and entry.is_file(follow_symlinks=False):
            try:
                os.unlink(entry.path)
                removed.append(entry.name)
            except FileNotFoundError:
                pass
    if removed:
        log.info("%s: removed %d temporary file(s) left by an interrupted write", run_dir, len(removed))
    return removed


def describe(info: dict) -> str:
    started = info.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
    return f"process {info.get('pid', '?')} on {info.get('host', '?')} (since {when})"


class RunLock:
    """Hold ``run.lock`` in ``run_dir`` from :meth:`acquire` to :meth:`release`."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK
        self._key = self.run_dir.resolve()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._info: dict = {}

    def acquire(self) -> "RunLock":
        with _mine_lock:
            if self._key in _mine:
                raise RunLocked(f"{self.run_dir}: another job in this process is writing this run")
            self.run_dir.mkdir(parents=True, exist_ok=True)
            now = time.time()
            self._info = {
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "process_start": _process_start(os.getpid()),
                "started": now,
                "heartbeat": now,
            }
            for _ in range(2):
                if self._create():
                    break
                held = read_lock(self.run_dir)
                if is_live(held):
                    raise RunLocked(f"{self.run_dir}: being written by {describe(held)}")
                log.warning("%s: taking over from a writer that is gone (%s)", self.run_dir, describe(held or {}))
                self.path.unlink(missing_ok=True)
            else:  # pragma: no cover - two processes took over the same dead lock at once
                raise RunLocked(f"{self.run_dir}: another process took this run over")
            _mine.add(self._key)
        # Nobody live writes the folder now: what an interrupted write left is garbage.
        clean_temp(self.run_dir)
        self._thread = threading.Thread(target=self._beat, name=f"tl-lock-{self.run_dir.name}", daemon=True)
        self._thread.start()
        return self

    def _create(self) -> bool:
        """Create the lock with its contents in one step; False if one exists.

        A hard link to a finished temporary file, so that a reader never sees
        an empty lock; exclusive creation where links are not supported.
        """
        text = json.dumps(self._info)
        fd, tmp = tempfile.mkstemp(prefix=".run.", suffix=".tmp.lock", dir=self.run_dir)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            try:
                os.link(tmp, self.path)
                return True
            except FileExistsError:
                return False
            except OSError:  # no hard links here (some network and FAT file systems)
                try:
                    fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    return False
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    fh.write(text)
                return True
        finally:
            os.unlink(tmp)

    def heartbeat(self) -> None:
        self._info["heartbeat"] = time.time()
        try:
            write_json(self.path, self._info)
        except OSError as exc:  # a full disk must not end the run; the pid keeps the lock live here
            log.warning("%s: could not renew the heartbeat (%s)", self.path, exc.strerror or exc)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            self.heartbeat()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with _mine_lock:
            if self._key in _mine:
                _mine.discard(self._key)
                held = read_lock(self.run_dir)
                if held is not None and held.get("pid") == os.getpid():
                    self.path.unlink(missing_ok=True)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
