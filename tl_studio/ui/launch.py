"""Starting the app: ``python launch.py``, ``tl-studio ui`` and a Hugging Face Space."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from ..workspace import MAX_PER_CLIENT, MAX_TOTAL

log = logging.getLogger(__name__)


class LaunchError(ValueError):
    """A bad launch setting; the message names the option."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    p.add_argument("--share", action="store_true", help="also serve on a public gradio.live link (shared mode)")
    p.add_argument("--auth", metavar="USER:PASSWORD", help="require this login")
    p.add_argument("--runs-dir", default=os.environ.get("TL_STUDIO_RUNS_DIR", "runs"))
    p.add_argument("--multi-user", action="store_true", help="a private workspace per browser (shared mode)")
    p.add_argument("--grace-minutes", type=float, default=30.0,
                   help="shared mode: delete a workspace no tab has touched for this long")
    p.add_argument("--max-upload-mb", type=int, default=200)
    p.add_argument("--max-workspaces", type=int, default=MAX_TOTAL,
                   help="shared mode: workspaces open at once, in all (idle ones make room first)")
    p.add_argument("--max-workspaces-per-client", type=int, default=MAX_PER_CLIENT,
                   help="shared mode: workspaces open at once for one client address")


def is_space() -> bool:
    return bool(os.environ.get("SPACE_ID"))


def main(argv: list[str] | None = None) -> None:
    from ..runtime import configure_logging, tune_allocator

    p = argparse.ArgumentParser(prog="launch.py", description="Start the TL Studio app.")
    add_arguments(p)
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    configure_logging(args.verbose)
    tune_allocator()
    run(args)


def run(args: argparse.Namespace, *, block: bool = True):
    """Build and launch the app; returns the Blocks (when ``block`` is False)."""
    from ..workspace import WorkspaceManager
    from .app import build_app
    from .context import ASSETS
    from .data_tab import BURST_JS

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    shared = bool(args.share or args.multi_user or is_space())
    auth = None
    if args.auth:
        if ":" not in args.auth:
            raise LaunchError("--auth: expected USER:PASSWORD")
        auth = tuple(args.auth.split(":", 1))
    runs_dir = Path(args.runs_dir).resolve()
    limits = {"max_total": getattr(args, "max_workspaces", MAX_TOTAL),
              "max_per_client": getattr(args, "max_workspaces_per_client", MAX_PER_CLIENT)}
    for flag, value in zip(("--max-workspaces", "--max-workspaces-per-client"), limits.values()):
        if value < 1:
            raise LaunchError(f"{flag}: must be at least 1, got {value}")
    manager = WorkspaceManager(runs_dir, shared=shared, grace_seconds=args.grace_minutes * 60, **limits)
    manager.start_reaper()
    # Behind a share link's or a Space's proxy the peer is the proxy; the header names the client.
    demo = build_app(manager, trust_forwarded=bool(args.share or is_space()))
    log.info("runs folder %s (%s mode)", runs_dir, "shared" if shared else "local")
    demo.queue(default_concurrency_limit=4)
    demo.launch(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        auth=auth,
        max_file_size=f"{args.max_upload_mb}mb",
        # Served files: run outputs and dataset samples (workspace paths hold unguessable ids).
        allowed_paths=[str(runs_dir), str(ASSETS)],
        js=BURST_JS,
        prevent_thread_lock=True,
        # Errors raised before our handlers run (e.g. an upload Gradio cannot
        # read) still reach the user as a message, not a generic failure.
        show_error=True,
        footer_links=["gradio", "settings"],
    )
    if args.share:
        # Offline, Gradio prints why and serves locally; say so in our log too.
        if demo.share_url:
            log.info("public share link: %s", demo.share_url)
        else:
            log.warning("could not create a public share link (offline?); serving locally only")
    if block:
        demo.block_thread()
    return demo
