"""What every tab's handlers share: the workspace manager, the app settings, and how user errors are shown.

Only names and plain data cross into Gradio components; datasets, models,
tensors and threads stay here on the server, found by workspace id.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import gradio as gr

from ..workspace import Workspace, WorkspaceManager
from .session import Session

log = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parents[2] / "assets"
DEMO_DATA = ASSETS / "demo"


class UserError(Exception):
    """An expected mistake of the user's (bad file, missing step): one message, no traceback."""


def fail(message: str) -> UserError:
    """A user-facing error: ``raise fail("Data: load a dataset first")``."""
    return UserError(message)


def from_api_client() -> bool:
    """Whether the running event was called by gradio_client (it marks its requests)."""
    try:
        from gradio.context import LocalContext

        request = LocalContext.request.get(None)
    except (ImportError, AttributeError, LookupError):  # pragma: no cover - another Gradio
        return True
    if request is None:
        return True
    headers = getattr(request, "headers", None) or {}
    return headers.get("x-gradio-user") == "api"


def guarded(fn: Callable, outputs: int) -> Callable:
    """Wrap a handler so that a :class:`UserError` is one message and changes nothing else.

    In the page it is a warning toast and every output keeps its value
    (``gr.skip()``): a ``gr.Error`` would mark all outputs with red "Error"
    badges although nothing was lost. An API client gets an error it can
    catch. Either way the log gets one line, not a traceback.
    """

    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            message = str(exc)
            log.info("user error in %s: %s", fn.__name__, message)
            if from_api_client():
                raise gr.Error(message, duration=None, print_exception=False) from None
            gr.Warning(message, duration=12)
            return gr.skip() if outputs == 1 else tuple(gr.skip() for _ in range(outputs))

    return run


@dataclass
class AppContext:
    manager: WorkspaceManager
    shared: bool

    def ws(self, ws_id: str | None) -> Workspace:
        """The caller's workspace; a clear error if it expired (shared mode)."""
        try:
            ws = self.manager.get(ws_id)
        except KeyError as exc:
            raise fail(str(exc.args[0])) from None
        if ws.session is None:
            with ws.lock:
                if ws.session is None:
                    ws.session = Session()
        return ws


# Dropdowns whose choices differ per workspace (runs, classes) are declared with
# allow_custom_value=True: Gradio would otherwise check API callers' values against
# the empty construction-time choices. Every handler resolves the name itself
# (Workspace.run_path and the engine), which is the check that matters.
