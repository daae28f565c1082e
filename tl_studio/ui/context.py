"""What every tab's handlers share: the workspace manager and the app settings.

Only names and plain data cross into Gradio components; datasets, models,
tensors and threads stay here on the server, found by workspace id.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from ..workspace import Workspace, WorkspaceManager

log = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parents[2] / "assets"
DEMO_DATA = ASSETS / "demo"


@dataclass
class AppContext:
    manager: WorkspaceManager
    shared: bool

    def ws(self, ws_id: str | None) -> Workspace:
        """The caller's workspace; a clear error if it expired (shared mode)."""
        try:
            return self.manager.get(ws_id)
        except KeyError as exc:
            raise gr.Error(str(exc.args[0])) from None


# Dropdowns whose choices differ per workspace (runs, classes) are declared with
# allow_custom_value=True: Gradio would otherwise check API callers' values against
# the empty construction-time choices. Every handler resolves the name itself
# (Workspace.run_path and the engine), which is the check that matters.


def fail(message: str) -> gr.Error:
    """A user-facing error (shown in the page, returned to API clients)."""
    return gr.Error(message, duration=None)
