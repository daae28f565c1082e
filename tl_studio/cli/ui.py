"""``tl-studio ui``: start the browser app (the same as ``python launch.py``)."""

from __future__ import annotations

from .common import CLIError


def add_parser(sub) -> None:
    from ..ui.launch import add_arguments  # argparse only: gradio loads when the app starts

    s = sub.add_parser("ui", help="start the browser app (same as python launch.py)")
    add_arguments(s)
    s.set_defaults(func=run)


def run(args) -> int:
    from ..ui.launch import LaunchError
    from ..ui.launch import run as launch

    try:
        launch(args)
    except LaunchError as exc:
        raise CLIError(str(exc)) from None
    return 0
