"""Workspaces: whose data, runs and jobs a browser (or an API client) may see.

Local mode (``python launch.py``): one workspace, ``local``; every run under
the runs folder is visible, as in the CLI.

Shared mode (``--share``, a Space, ``--multi-user``): each browser gets a
workspace with an unguessable id kept in its ``gr.BrowserState``; its
uploads and runs live under ``<runs>/workspaces/<id>/`` and nobody else can
reach them. A workspace no tab has touched for a grace period (tabs send a
heartbeat while open) is deleted with its files; page reloads re-attach, so
nothing is deleted on unload.

Creating workspaces is limited, per client and in total: each one is a
folder on the server's disk, and anyone who can reach the page can ask for
one. At a limit, idle workspaces (no job, untouched for ``idle_seconds``) go
first, oldest first; if none is idle the request is refused with
:class:`WorkspaceLimit`.

This module is plain Python (no gradio): the UI passes ids in, names out.
"""

from __future__ import annotations

import logging
import re
import secrets
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

LOCAL_ID = "local"
MAX_PER_CLIENT = 20
MAX_TOTAL = 200
IDLE_SECONDS = 120.0  # four missed tab heartbeats: no tab has it open
_ID_RE = re.compile(r"^[A-Za-z0-9_-]{20,64}$")
RUN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,80}$")


@dataclass
class Workspace:
    id: str
    root: Path  # everything of this workspace lives below
    runs_dir: Path
    data_dir: Path
    last_seen: float = field(default_factory=time.time)
    builder: object = None  # tl_studio.data.DatasetBuilder for per-class uploads
    job_ids: list[str] = field(default_factory=list)
    # Where feature sets of this workspace's data are cached: None is the user's cache folder
    # (local mode); in shared mode a folder inside the workspace, deleted with it.
    feature_cache: Path | None = None
    # what the UI is editing (a tl_studio.ui.session.Session: plan, evidence, settings...),
    # so a reload restores it; the engine never reads it
    session: object = None
    # derived data reused between requests (decoded images, the last evaluation)
    cache: dict = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)
    client: str = ""  # who asked for it (the per-client limit)

    @property
    def current_job(self) -> str | None:
        return self.job_ids[-1] if self.job_ids else None

    def run_dirs(self) -> list[Path]:
        """Run directories this workspace may see, newest first."""
        if not self.runs_dir.is_dir():
            return []
        runs = [p.parent for p in self.runs_dir.glob("*/config.json")]
        return sorted(runs, key=lambda p: p.stat().st_mtime, reverse=True)

    def run_path(self, name: str) -> Path:
        """A run of this workspace by name; never a path supplied from outside."""
        if not isinstance(name, str) or not RUN_NAME_RE.match(name):
            raise ValueError(f"run: {name!r} is not a run name")
        path = self.runs_dir / name
        if not (path / "config.json").is_file():
            raise ValueError(f"run: no run named {name!r} in this workspace")
        return path

    def new_run_path(self, model: str) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for i in range(1000):
            name = f"{stamp}-{model}" + (f"-{i}" if i else "")
            path = self.runs_dir / name
            if not path.exists():
                path.mkdir(parents=True)
                return path
        raise RuntimeError("no free run name")


class WorkspaceLimit(RuntimeError):
    """No new workspace now: a limit is reached and no workspace is idle."""


def _has_active_job(w: Workspace) -> bool:
    from .train import REGISTRY, JobNotFound

    for job_id in w.job_ids:
        try:
            if not REGISTRY.get(job_id).done:
                return True
        except JobNotFound:
            continue
    return False


class WorkspaceManager:
    def __init__(self, runs_dir: str | Path, *, shared: bool, grace_seconds: float = 1800.0,
                 max_per_client: int = MAX_PER_CLIENT, max_total: int = MAX_TOTAL,
                 idle_seconds: float = IDLE_SECONDS):
        self.runs_dir = Path(runs_dir).resolve()
        self.shared = shared
        self.grace_seconds = grace_seconds
        self.max_per_client = max_per_client
        self.max_total = max_total
        self.idle_seconds = idle_seconds
        self._lock = threading.Lock()
        self._spaces: dict[str, Workspace] = {}
        self._reaper: threading.Thread | None = None
        self._stop = threading.Event()

    # ---- lookup -----------------------------------------------------------------------
    def _make(self, ws_id: str) -> Workspace:
        if self.shared:
            root = self.runs_dir / "workspaces" / ws_id
            ws = Workspace(ws_id, root, root / "runs", root / "data", feature_cache=root / "cache" / "features")
        else:
            ws = Workspace(ws_id, self.runs_dir, self.runs_dir, self.runs_dir / ".data")
        ws.runs_dir.mkdir(parents=True, exist_ok=True)
        ws.data_dir.mkdir(parents=True, exist_ok=True)
        return ws

    def attach(self, ws_id: str | None, client: str = "") -> Workspace:
        """The workspace for an id from a browser or a client; a new one if unknown.

        In shared mode an id is only honoured if this server issued it, so a
        made-up id never reaches someone else's files. A new one counts
        against ``client``'s limit and the total (:class:`WorkspaceLimit`).
        """
        evicted: list[Workspace] = []
        try:
            with self._lock:
                if not self.shared:
                    ws = self._spaces.get(LOCAL_ID) or self._spaces.setdefault(LOCAL_ID, self._make(LOCAL_ID))
                elif isinstance(ws_id, str) and _ID_RE.match(ws_id) and ws_id in self._spaces:
                    ws = self._spaces[ws_id]
                else:
                    evicted = self._make_room(client)
                    new_id = secrets.token_urlsafe(24)
                    ws = self._spaces[new_id] = self._make(new_id)
                    ws.client = client
                    log.info("new workspace %s…", new_id[:6])
                ws.last_seen = time.time()
                return ws
        finally:
            for w in evicted:  # outside the lock: deleting files takes a while
                self._delete(w)

    def _make_room(self, client: str) -> list[Workspace]:
        """Idle workspaces taken out to stay within the limits (lock held); WorkspaceLimit if none is."""
        now = time.time()
        idle = sorted((w for w in self._spaces.values()
                       if now - w.last_seen > self.idle_seconds and not _has_active_job(w)),
                      key=lambda w: w.last_seen)
        out: list[Workspace] = []
        mine = [w for w in self._spaces.values() if w.client == client]
        for w in (w for w in idle if w.client == client):
            if len(mine) < self.max_per_client:
                break
            mine.remove(w)
            out.append(w)
        if len(mine) >= self.max_per_client:
            raise WorkspaceLimit(f"this client already has {len(mine)} workspaces open, the most allowed; "
                                 "reuse one (its id) or try again later")
        total = len(self._spaces) - len(out)
        for w in (w for w in idle if w not in out):
            if total < self.max_total:
                break
            out.append(w)
            total -= 1
        if total >= self.max_total:
            raise WorkspaceLimit(f"the server has {total} workspaces open, the most it allows; try again later")
        for w in out:
            del self._spaces[w.id]
            log.info("workspace %s… was idle and made room for a new one", w.id[:6])
        return out

    def get(self, ws_id: str | None) -> Workspace:
        """Like :meth:`attach`, but an unknown id in shared mode is an error."""
        with self._lock:
            if not self.shared:
                pass
            elif not ws_id:
                raise KeyError("this page has not attached to a workspace yet; wait a moment or reload the page")
            elif not (isinstance(ws_id, str) and ws_id in self._spaces):
                raise KeyError("this workspace has expired or does not exist; reload the page")
        return self.attach(ws_id)

    def touch(self, ws_id: str | None) -> None:
        """Mark a workspace as still open in some tab (its heartbeat); unknown ids are ignored."""
        with self._lock:
            ws = self._spaces.get(LOCAL_ID if not self.shared else ws_id)
            if ws is not None:
                ws.last_seen = time.time()

    def __len__(self) -> int:
        with self._lock:
            return len(self._spaces)

    # ---- expiry -------------------------------------------------------------------------
    def reap(self, now: float | None = None) -> list[str]:
        """Delete shared workspaces unseen for the grace period (their jobs stop first)."""
        if not self.shared:
            return []
        now = time.time() if now is None else now
        with self._lock:
            stale = [w for w in self._spaces.values() if now - w.last_seen > self.grace_seconds]
            for w in stale:
                del self._spaces[w.id]
        for w in stale:
            self._delete(w)
            log.info("workspace %s… expired and was deleted", w.id[:6])
        return [w.id for w in stale]

    def _delete(self, w: Workspace) -> None:
        """Stop a workspace's jobs and delete its files (it is already out of the table)."""
        from .train import REGISTRY, JobNotFound

        for job_id in w.job_ids:
            try:
                job = REGISTRY.get(job_id)
            except JobNotFound:
                continue
            job.stop()
            job.wait(60)
            REGISTRY.forget(job_id)
        root = w.root.resolve()
        # Only ever delete inside <runs>/workspaces/.
        if root.parent == self.runs_dir / "workspaces":
            shutil.rmtree(root, ignore_errors=True)

    def start_reaper(self, every_seconds: float = 60.0) -> None:
        if not self.shared or self._reaper is not None:
            return

        def loop():
            while not self._stop.wait(every_seconds):
                try:
                    self.reap()
                except Exception:  # never let cleanup kill the server
                    log.exception("workspace cleanup failed")

        self._reaper = threading.Thread(target=loop, name="tl-workspace-reaper", daemon=True)
        self._reaper.start()

    def stop_reaper(self) -> None:
        self._stop.set()
