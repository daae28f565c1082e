"""Running the real app in-process and finding a real browser for the UI tests."""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import time
from pathlib import Path

import pytest

BROWSER_ENV = "TL_STUDIO_BROWSER"
REQUIRE_ENV = "TL_STUDIO_REQUIRE_BROWSER"  # set by .ci/run: a missing browser fails there


def find_browser() -> str | None:
    """Debian's chromium, or one named by TL_STUDIO_BROWSER; never a downloaded one."""
    named = os.environ.get(BROWSER_ENV)
    if named:
        return named if Path(named).exists() else None
    for candidate in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(candidate)
        if path:
            return path
    return None


def browser_or_skip() -> str:
    path = find_browser()
    if path is None:
        message = (
            "no Chromium found: install Debian's chromium (apt-get install chromium) "
            f"or set {BROWSER_ENV} to a Chromium/Chrome binary"
        )
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(message)
        pytest.skip(message)
    return path


def launch_browser(playwright, *, fake_camera: bool = False):
    args = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
    ]
    if fake_camera:  # Chromium's built-in test camera: a real media stream, no device needed
        args += ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
    return playwright.chromium.launch(executable_path=browser_or_skip(), headless=True, args=args)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunningApp:
    """The real app (launch.py's code path) serving on a free port in this process."""

    def __init__(self, runs_dir: Path, *, multi_user: bool = False, grace_minutes: float = 30.0, **options):
        """``options``: further launch options (``max_workspaces_per_client=2``...)."""
        from tl_studio.ui.launch import run

        self.runs_dir = Path(runs_dir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        args = argparse.Namespace(
            host="127.0.0.1",
            port=self.port,
            share=False,
            auth=None,
            runs_dir=str(runs_dir),
            multi_user=multi_user,
            grace_minutes=grace_minutes,
            max_upload_mb=50,
            **options,
        )
        self.demo = run(args, block=False)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)

    def close(self):
        self.demo.close()


def choose(page, dropdown: str, option) -> None:
    """Pick ``option`` (text or pattern) in the Gradio dropdown with elem_id ``dropdown`` ("#tl-...")."""
    page.locator(f"{dropdown} input").click()
    page.get_by_role("option", name=option).first.click()
