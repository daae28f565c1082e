"""Starting the app: ``python launch.py``, ``tl-studio ui`` and a Hugging Face Space."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from ..workspace import MAX_PER_CLIENT, MAX_TOTAL
from ..errors import InputError

log = logging.getLogger(__name__)


class LaunchError(InputError, ValueError):
    """A bad launch setting; the message names the option."""


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"must be between 1 and 65535, got {port}")
    return port


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    p.add_argument("--port", type=_port, default=os.environ.get("GRADIO_SERVER_PORT", "7860"),
                   help="port to serve on (default 7860, or GRADIO_SERVER_PORT)")
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
    """``python launch.py``: a bad setting (a busy port) is one line and exit status 2."""
    import sys

    from ..runtime import configure_logging, tune_allocator

    p = argparse.ArgumentParser(prog="launch.py", description="Start the TL Studio app.")
    add_arguments(p)
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    configure_logging(args.verbose)
    tune_allocator()
    try:
        run(args)
    except LaunchError as exc:
        if args.verbose:
            raise
        print(f"launch.py: error: {exc}", file=sys.stderr)
        sys.exit(2)


def check_port_free(host: str, port: int) -> None:
    """A clear :class:`LaunchError` when something already listens on ``host:port``.

    Gradio's own message names ``launch()``'s ``server_port``, which a user of
    this app never sees. SO_REUSEADDR, as the server sets it: only a listening
    socket makes the bind fail, not connections of a server that just stopped.
    """
    import socket

    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise LaunchError(f"--host {host}: not an address of this machine ({exc.strerror})") from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(addr)
        except PermissionError:
            raise LaunchError(f"--port {port}: not allowed for this user (ports below 1024 need root); "
                              "choose another with --port N or GRADIO_SERVER_PORT=N") from None
        except OSError as exc:
            raise LaunchError(f"--port {port}: already in use on {host} ({exc.strerror}); stop what uses it, "
                              "or choose another port with --port N or GRADIO_SERVER_PORT=N") from None


def run(args: argparse.Namespace, *, block: bool = True):
    """Build and launch the app; returns the Blocks (when ``block`` is False)."""
    from ..workspace import WorkspaceManager
    from .app import build_app

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    shared = bool(args.share or args.multi_user or is_space())
    auth = None
    if args.auth:
        if ":" not in args.auth:
            raise LaunchError("--auth: expected USER:PASSWORD")
        auth = tuple(args.auth.split(":", 1))
    check_port_free(args.host, args.port)
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
    try:
        _launch(demo, args, auth, runs_dir)
    except OSError as exc:  # the port was taken between the check and the bind
        raise LaunchError(f"--port {args.port}: cannot serve there ({exc}); choose another port with --port N "
                          "or GRADIO_SERVER_PORT=N") from None
    if args.share:
        # Offline, Gradio prints why and serves locally; say so in our log too.
        if demo.share_url:
            log.info("public share link: %s", demo.share_url)
        else:
            log.warning("could not create a public share link (offline?); serving locally only")
    if block:
        demo.block_thread()
    return demo


def _launch(demo, args, auth, runs_dir: Path) -> None:
    from .context import ASSETS
    from .data_tab import BURST_JS

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
