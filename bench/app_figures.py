"""Figures 5 and 6: the real app, started as users start it and driven by ``gradio_client``.

The server is ``python launch.py`` in its own process (so that its CPU is
not the bench's, and its allocator tuning is the entry point's own); the
bench process is the client, as a browser would be.

5. time to first model: Start on the demo dataset with the recommended plan,
   until the job reports a trained model;
6. UI overhead: training images/s while one client polls the live curves
   every second, against the same job unwatched: one job on the app server,
   polled in alternate windows, so that the poller is the only difference
   between the epochs compared and the machine's drift cancels; how stale
   the polled curves are; how fast small requests answer while a job trains.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from .common import DEMO, ROOT, Row, check, median, pair_range

log = logging.getLogger("bench.app")

MODEL = "efficientnet_lite0"
DONE = ("finished", "failed", "stopped")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def app_server(runs_dir: Path, timeout: float = 180):
    """``python launch.py`` on a free port; yields (gradio_client.Client, startup seconds, server pid)."""
    from gradio_client import Client

    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    log_path = runs_dir / "server.log"
    with open(log_path, "wb") as log_file:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "launch.py", "--runs-dir", str(runs_dir / "runs"), "--port", str(port)],
            cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
        )
        try:
            client = None
            while client is None:
                if proc.poll() is not None:
                    raise RuntimeError(f"launch.py exited with {proc.returncode}:\n{_tail(log_path)}")
                if time.perf_counter() - t0 > timeout:
                    raise RuntimeError(f"launch.py did not answer within {timeout:.0f} s:\n{_tail(log_path)}")
                try:
                    # One SSL context for every request: without it gradio_client builds
                    # a new one per HTTP call (loading the CA bundle), ~60 ms of CPU per
                    # poll on this machine against ~5 ms with it, and that CPU would count
                    # against the training it measures (figure 6), as a browser's would.
                    client = Client(url, verbose=False, ssl_verify=ssl.create_default_context())
                except Exception:  # not listening yet
                    time.sleep(0.5)
            try:
                yield client, time.perf_counter() - t0, proc.pid
            except Exception:
                state = "running" if proc.poll() is None else f"exited with {proc.returncode}"
                log.error("the app server (%s) logged:\n%s", state, _tail(log_path))
                raise
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _poll_cost(client, pid: int, job_id: str, n: int = 10) -> tuple[float, float]:
    """CPU seconds per /poll_job on an idle server: (server, this client)."""
    client.predict(job_id, api_name="/poll_job")
    s0, c0 = _cpu_seconds(pid), time.process_time()
    for _ in range(n):
        client.predict(job_id, api_name="/poll_job")
    return (_cpu_seconds(pid) - s0) / n, (time.process_time() - c0) / n


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "(no server log)"


def _wait_done(client, job_id: str, every: float, timeout: float = 600) -> dict:
    deadline = time.time() + timeout
    while True:
        snap = client.predict(job_id, api_name="/poll_job")
        if snap["status"] in DONE:
            return snap
        if time.time() > deadline:
            client.predict(job_id, api_name="/stop_job")
            raise RuntimeError(f"job {job_id[:8]} did not finish within {timeout:.0f} s")
        time.sleep(every)


class Poller(threading.Thread):
    """One client reading the live curves every ``interval`` seconds, as the UI's timer does.

    Records when each epoch row was first seen, to measure staleness: the
    time from the row's creation in the job (``created + elapsed``, both on
    this machine's clock) to its arrival at the client.
    """

    def __init__(self, client, job_id: str, interval: float = 1.0):
        super().__init__(daemon=True)
        self.client, self.job_id, self.interval = client, job_id, interval
        self.first_seen: dict[int, float] = {}
        self.snap: dict | None = None
        self.latencies: list[float] = []
        self.error: BaseException | None = None

    def run(self):
        try:
            next_at = time.time()
            while True:
                t = time.time()
                snap = self.client.predict(self.job_id, api_name="/poll_job")
                now = time.time()
                self.latencies.append(now - t)
                for row in snap["epochs"]:
                    self.first_seen.setdefault(int(row["epoch"]), now)
                self.snap = snap
                if snap["status"] in DONE:
                    return
                next_at += self.interval
                time.sleep(max(0.0, next_at - time.time()))
        except BaseException as exc:  # reported by the caller
            self.error = exc

    def staleness(self) -> list[float]:
        created = self.snap["created"]
        return [self.first_seen[int(r["epoch"])] - (created + float(r["elapsed"])) for r in self.snap["epochs"]]


WINDOW_SECONDS = 6.0  # about three epochs of the figure-6 job on a 2-core CPU


class WindowedPoller(Poller):
    """Polls every ``interval`` seconds in one window, not at all in the next, alternating.

    Starts with a quiet window. The job's end is noticed in the next polled window.
    """

    def __init__(self, client, job_id: str, window: float, interval: float = 1.0):
        super().__init__(client, job_id, interval)
        self.window = window
        self.windows: list[tuple[float, float, bool]] = []  # (start, end, polled), time.time()

    def run(self):
        try:
            polled = False
            while True:
                start = time.time()
                end = start + self.window
                self.windows.append((start, end, polled))
                while polled and time.time() < end:
                    self.snap = self.client.predict(self.job_id, api_name="/poll_job")
                    if self.snap["status"] in DONE:
                        self.windows[-1] = (start, time.time(), polled)
                        return
                    time.sleep(max(0.0, min(self.interval, end - time.time())))
                if not polled:
                    time.sleep(self.window)
                polled = not polled
        except BaseException as exc:  # reported by the caller
            self.error = exc

    def rates_by_window(self) -> tuple[list[float], list[float]]:
        """Training images/s of the epochs that lie wholly in a polled window, and in a quiet one."""
        created = self.snap["created"]
        rows = sorted(self.snap["epochs"], key=lambda r: int(r["epoch"]))
        polled, quiet = [], []
        for prev, row in zip(rows, rows[1:]):  # epoch 1 (building the frozen copy) has no predecessor
            begin, finish = created + float(prev["elapsed"]), created + float(row["elapsed"])
            for start, end, was_polled in self.windows:
                if start <= begin and finish <= end:
                    (polled if was_polled else quiet).append(float(row["images_per_second"]))
                    break
        if not polled or not quiet:
            raise RuntimeError(f"too few epochs inside windows ({len(polled)} polled, {len(quiet)} quiet)")
        return polled, quiet


def _watched_job(client, epochs, batch_size, lr, augment, make_poller, timeout: float) -> "Poller":
    """Start a training job through the app and follow it with a poller until it has finished."""
    r = client.predict("local", MODEL, *_settings(epochs, batch_size, lr, augment), api_name="/start_training")
    poller = make_poller(r[1])
    poller.start()
    poller.join(timeout)
    if poller.error is not None:
        raise poller.error
    if poller.snap is None or poller.snap["status"] != "finished":
        state = poller.snap["status"] if poller.snap else "unseen"
        raise RuntimeError(f"{type(poller).__name__} job ended {state}: {(poller.snap or {}).get('error')}")
    return poller


def _settings(epochs, batch_size, lr, augment):
    # the order of /start_training's inputs after (workspace, model)
    return [int(epochs), int(batch_size), float(lr), "adamw", "cosine", augment, 0.1, 0.01, 0, 0, "cpu"]


def app_rows(*, overhead_epochs: int, window_epochs: int, requests: int) -> list[Row]:
    from tl_studio.data import load_dataset
    from tl_studio.plan import Plan

    rows: list[Row] = []
    ds = load_dataset(DEMO)
    ipc = len(ds.train_idx) / len(ds.classes)
    with tempfile.TemporaryDirectory(prefix="tl-bench-app-") as tmp, \
            app_server(Path(tmp)) as (client, startup, pid):
        # ---- 5: time to first model ---------------------------------------------------------
        t = time.time()
        client.predict("local", api_name="/load_demo")
        load_s = time.time() - t
        t = time.time()
        rec = client.predict("local", MODEL, ipc, 0.5, api_name="/apply_recommendation")
        apply_s = time.time() - t
        plan_json = rec[10]
        epochs, lr, bs, augment = rec[-4:]
        t_click = time.time()
        started = client.predict("local", MODEL, *_settings(epochs, bs, lr, augment), api_name="/start_training")
        snap = _wait_done(client, started[1], every=0.25)
        ttfm = (snap["finished"] or time.time()) - t_click
        summary = snap.get("summary") or {}
        acc = summary.get("best_val_accuracy")
        ok = snap["status"] == "finished" and ttfm < 30 and acc is not None and acc >= 0.9
        plan = Plan.from_json(plan_json)
        rows.append(Row(
            "5", "time to first model: Start -> trained, demo, recommended plan (real app, gradio_client)", ttfm,
            "s", "< 30 s, val acc >= 0.9", ok,
            f"{snap['status']}, validation accuracy {acc}, {summary.get('epochs_run')} epochs, feature cache "
            f"{summary.get('feature_cache')}; plan: {_describe(plan)}, {epochs} epochs, batch {bs}, augment "
            f"{augment}; before Start: server up {startup:.1f} s, load demo {load_s:.1f} s, apply "
            f"{apply_s:.1f} s (one cold run: a first model happens once)",
            limit="decoding the 200 demo JPEGs once, one pass of the frozen backbone to fill the feature "
            "cache, then epochs of a linear head that cost milliseconds.",
            lever="tl_studio/train/cache.py + extract.py (extraction), tl_studio/data/store.py (decoding), "
            "tl_studio/strategy (the recommended epochs).",
        ))

        # ---- 6: UI overhead, unwatched vs polled -------------------------------------------
        # what one poll costs the server, and the client, with nothing else running
        server_poll_s, client_poll_s = _poll_cost(client, pid, started[1])
        aug = "light"  # uncached: the frozen backbone runs every step, so the overhead has something to slow

        # 6b's poller reads every second from start to end, as the UI's timer does.
        poller = _watched_job(client, overhead_epochs, bs, lr, aug, lambda job_id: Poller(client, job_id), 600)
        stale, poll_lat = poller.staleness(), poller.latencies

        # 6: one long job, polled each second in some windows and left alone in the ones
        # between. Epochs next to each other in time are compared, so the machine's own
        # drift (this shared 2-core VM's speed wanders by a third over minutes) cancels.
        windowed = _watched_job(client, window_epochs, bs, lr, aug,
                                lambda job_id: WindowedPoller(client, job_id, window=WINDOW_SECONDS), 900)
        polled_rates, quiet_rates = windowed.rates_by_window()
        ui, hl = median(polled_rates), median(quiet_rates)
        ratio = ui / hl
        rows.append(Row(
            "6", "UI overhead: training img/s with a client polling each second / unwatched", ratio, "ratio",
            ">= 0.95", check(ratio, 0.95),
            f"{ui:.1f} img/s polled vs {hl:.1f} img/s unwatched: medians over {len(polled_rates)} and "
            f"{len(quiet_rates)} epochs of one {window_epochs}-epoch job on the app server, polled each second "
            f"in alternate {WINDOW_SECONDS:g} s windows and not at all in the others (epochs that straddle a "
            f"switch and epoch 1 left out; recommended plan with light augmentation, uncached). "
            f"One poll costs the server {1000 * server_poll_s:.0f} ms of CPU and the gradio_client poller "
            f"itself {1000 * client_poll_s:.0f} ms, in this process on the same 2 cores (a browser's CPU "
            f"would take that share instead): at 1 Hz, {100 * server_poll_s / os.cpu_count():.1f}% and "
            f"{100 * client_poll_s / os.cpu_count():.1f}% of the machine",
            limit="unwatched training (1.0): the server's share per poll is one lock-guarded copy of the "
            "metrics log plus Gradio's request handling; on 2 cores the client's own CPU counts too.",
            lever="tl_studio/train/metrics.py (snapshot cost), tl_studio/ui/train_tab.py (`poll_job`/`tick`: "
            "what each poll serialises); the queue's concurrency for poll events.",
        ))
        worst = max(stale) if stale else None
        rows.append(Row(
            "6b", "UI overhead: curve staleness (worst epoch point, poll every 1 s)", worst, "s", "<= 1.1 s",
            check(worst, 1.1, higher_is_better=False),
            f"median {median(stale):.2f} s over {len(stale)} epoch points; poll round trip median "
            f"{1000 * median(poll_lat):.0f} ms while training",
            limit="one poll interval (1 s) plus a round trip.",
            lever="tl_studio/ui/train_tab.py (POLL_SECONDS, the Timer) and the loop's `sync_every` "
            "(how often metrics leave the device).",
        ))

        # ---- 6c: small requests while a job trains ------------------------------------------
        def small_requests(job_id: str, n: int) -> dict[str, list[float]]:
            lat: dict[str, list[float]] = {"poll_job": [], "apply_recommendation": []}
            for _ in range(n):
                t = time.perf_counter()
                client.predict(job_id, api_name="/poll_job")
                lat["poll_job"].append(time.perf_counter() - t)
                time.sleep(0.2)
                t = time.perf_counter()
                client.predict("local", MODEL, ipc, 0.5, api_name="/apply_recommendation")
                lat["apply_recommendation"].append(time.perf_counter() - t)
                time.sleep(0.2)
            return lat

        # the same requests on the idle server first: what the handlers cost by themselves
        idle = small_requests(started[1], 3)
        r = client.predict("local", MODEL, *_settings(20, bs, lr, aug), api_name="/start_training")
        job_id = r[1]
        deadline = time.time() + 120
        while True:  # wait until the job is past decoding and training steps
            snap = client.predict(job_id, api_name="/poll_job")
            if snap["progress"].get("global_step", 0) >= 1 or snap["status"] in DONE or time.time() > deadline:
                break
            time.sleep(0.3)
        lat = small_requests(job_id, requests)
        still = client.predict(job_id, api_name="/poll_job")["status"]
        client.predict(job_id, api_name="/stop_job")
        _wait_done(client, job_id, every=0.3, timeout=120)
        m_poll, m_apply = 1000 * median(lat["poll_job"]), 1000 * median(lat["apply_recommendation"])
        rows.append(Row(
            "6c", "UI: small requests while a job trains, median (the slower endpoint)", max(m_poll, m_apply), "ms",
            "<= 300 ms", check(max(m_poll, m_apply), 300, higher_is_better=False),
            f"/poll_job {m_poll:.0f} ms, /apply_recommendation {m_apply:.0f} ms (recommend + the checklist, "
            f"plan JSON, layer table and network plot a layer tick or slider also returns; those events are "
            f"private) over {requests} calls each, the job {still} throughout; on the idle server "
            f"{1000 * median(idle['poll_job']):.0f} ms and {1000 * median(idle['apply_recommendation']):.0f} ms",
            limit="a request's own work plus one round trip, as on an idle server.",
            lever="tl_studio/ui (what each handler recomputes and returns); the training thread's share "
            "of the 2 cores (torch threads).",
        ))
    return rows


def _describe(plan) -> str:
    kind = "frozen backbone" if plan.default == "frozen" and not any(v == "train" for v in plan.layers.values()) \
        else "partly trained backbone"
    taps = f", taps {', '.join(plan.taps)}" if plan.taps else ""
    return f"{plan.model} {kind}{taps}"
