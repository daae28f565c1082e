"""Starting the app: ``python launch.py``, ``tl-studio ui`` and a Hugging Face Space."""

from __future__ import annotations

import argparse
import logging
import os

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    p.add_argument("--share", action="store_true", help="also serve on a public gradio.live link")
    p.add_argument("--auth", metavar="USER:PASSWORD", help="require this login")
    p.add_argument("--runs-dir", default=os.environ.get("TL_STUDIO_RUNS_DIR", "runs"))
    p.add_argument("--multi-user", action="store_true", help="separate workspaces per browser")


def main(argv: list[str] | None = None) -> None:
    from ..runtime import configure_logging, tune_allocator

    p = argparse.ArgumentParser(prog="launch.py", description="Start the TL Studio app.")
    add_arguments(p)
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    configure_logging(args.verbose)
    tune_allocator()
    run(args)


def run(args: argparse.Namespace) -> None:
    import gradio as gr

    with gr.Blocks(title="TL Studio", analytics_enabled=False) as demo:
        gr.Markdown("# TL Studio\nTransfer learning on images.")
    auth = tuple(args.auth.split(":", 1)) if args.auth else None
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, auth=auth)
