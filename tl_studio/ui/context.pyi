"""What every tab's handlers share: the workspace manager, the app settings, and how user errors are shown.

Only names and plain data cross into Gradio components; datasets, models,
tensors and threads stay here on the server, found by workspace id.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import gradio as gr

from ..errors import InputError
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


# Runs folders of the apps in this process: text for clients never shows a path below
# them (a workspace's path holds its id, which grants its files) or below the
# server's working directory. Run names stand in for run folders.
_roots: set[str] = set()
_roots_lock = threading.Lock()
_ID = r"[A-Za-z0-9_-]+"


def keep_private(runs_dir: str | os.PathLike) -> None:
    """Register a runs folder whose paths :func:`redact` hides."""
    with _roots_lock:
        _roots.update({str(Path(runs_dir)), str(Path(runs_dir).resolve())})


def redact(text):
    """``text`` with server paths replaced: a run folder by its name, a workspace by
    ``<workspace>``, the runs folder by ``<runs>``, the working directory by ``.``.
    Anything but a string comes back as it is."""
    if not isinstance(text, str):
        return text
    with _roots_lock:
        roots = sorted(_roots, key=len, reverse=True)
    for root in roots:
        if root not in text:
            continue
        r = re.escape(root)
        text = re.sub(rf"{r}/workspaces/{_ID}/runs/", "", text)
        text = re.sub(rf"{r}/workspaces/{_ID}/data/", "data/", text)
        text = re.sub(rf"{r}/workspaces/{_ID}", "<workspace>", text)
        text = text.replace(root, "<runs>")
    cwd = os.getcwd()
    if len(cwd) > 1:
        text = text.replace(cwd + os.sep, "").replace(cwd, ".")
    return text


def redact_all(data):
    """:func:`redact` on every string inside dicts and lists (an API result)."""
    if isinstance(data, dict):
        return {k: redact_all(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return type(data)(redact_all(v) for v in data)
    return redact(data)


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
        except (UserError, InputError) as exc:  # the engine's user errors read the same
            message = redact(str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc))
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
    # Whether X-Forwarded-For names the client (behind a Space's or a share link's proxy);
    # elsewhere anyone could set it, so the peer address does.
    trust_forwarded: bool = False

    def __post_init__(self):
        keep_private(self.manager.runs_dir)

    def client(self, request) -> str:
        """Who is asking, for the per-client limit on new workspaces."""
        headers = getattr(request, "headers", None) or {}
        if self.trust_forwarded:
            forwarded = headers.get("x-forwarded-for", "")
            first = forwarded.split(",")[0].strip()
            if first:
                return first
        peer = getattr(request, "client", None)
        return getattr(peer, "host", None) or "unknown"

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


# ---- what API clients see (gradio_client's view_api) -------------------------------------
# Gradio names an output after its component's label ("value_31" without one), a gr.api
# parameter or output by its position ("1st"), and types each from the component's
# api_info. These give every endpoint real names and types.

from gradio.events import Dependency

class WorkspaceId(gr.BrowserState):
    """The browser's workspace id (kept across reloads); an API client passes the string /new_workspace gave."""

    is_template = True  # the browser treats it as a gr.BrowserState

    def api_info(self) -> dict:
        return {"type": "string", "description": "workspace id, from /new_workspace"}

    def get_config(self, cls=None) -> dict:
        # gr.BrowserState takes no label, so Gradio would call it "parameter_1" in view_api().
        return {**super().get_config(cls), "label": "workspace id"}
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component


class NameDropdown(gr.Dropdown):
    """A dropdown whose choices differ per workspace (runs, classes): to an API client, a name.

    Made by :func:`name_dropdown`. (No ``__init__`` of its own: Gradio reads a
    component's settings back through its constructor's signature.)
    """

    is_template = True

    def api_info(self) -> dict:
        if self.multiselect:
            return {"type": "array", "items": {"type": "string"}}
        return {"type": "string"}
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component


def name_dropdown(label: str, **kwargs) -> NameDropdown:
    """A :class:`NameDropdown` with no choices yet and ``allow_custom_value=True``: Gradio would otherwise
    check API callers' values against the empty construction-time choices (and type them ``Literal[]``).
    Every handler resolves the name itself (Workspace.run_path and the engine), which is the check that
    matters."""
    return NameDropdown(label=label, choices=[], allow_custom_value=True, **kwargs)


class PollTimer(gr.Timer):
    """A page's polling timer: an output of some events, but nothing an API client receives."""

    is_template = True

    @property
    def skip_api(self) -> bool:
        return True
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component


def api(fn: Callable, api_name: str, *, returns: str, **kwargs):
    """``gr.api`` whose parameters and result carry names and types in ``view_api()``.

    ``fn``'s annotations are resolved (this codebase writes ``from __future__
    import annotations``, which Gradio would type as Any), its parameters are
    labelled by name, and its result by ``returns``.
    """
    import inspect

    original = inspect.unwrap(fn)
    fn.__signature__ = inspect.signature(original, eval_str=True)
    dep = gr.api(fn, api_name=api_name, **kwargs)
    blocks = gr.context.get_blocks_context().blocks
    for name, block_id in zip(fn.__signature__.parameters, dep["inputs"]):  # a Dependency is its config dict
        blocks[block_id].label = name
    for block_id in dep["outputs"]:
        blocks[block_id].label = returns
    return dep