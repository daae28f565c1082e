"""What every command shares: the parser, checked argument types, user errors, printing results.

Every command prints its results on stdout (a table for people; JSON with
``--json``; a path) and nothing else: progress and log lines go to stderr.
On bad input a command raises :class:`CLIError` (or the engine raises its
own :class:`~tl_studio.errors.InputError`): one line, exit status 2.

Nothing here imports torch or pandas at module level: ``tl-studio --help``
parses with this module alone.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from ..errors import InputError

# The default model, named here so that building the parser never imports the registry
# (and torch); a test checks it against ``registry.DEFAULT_MODEL``.
DEFAULT_MODEL = "efficientnet_lite0"


class CLIError(InputError):
    """A user-facing error: printed as one line, exit status 2."""


class UsageError(CLIError):
    """A command line argparse refuses; main prints it as one line naming the option."""


class Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line and exit status 2 through ``main``, not usage text.

    Subcommand parsers are made with the parent's class, so this holds for every command.
    """

    def error(self, message: str):  # argparse's hook; it must not return
        # "argument --epochs: must be ..." reads better as "--epochs: must be ..."
        raise UsageError(f"{self.prog}: error: {message.removeprefix('argument ')} (see {self.prog} --help)")


# ---- argument types: checked when parsed, before any data loads -------------------------
def _number(text: str, kind):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}")
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def finite_float(text: str) -> float:
    return _number(text, float)


def positive_float(text: str) -> float:
    value = _number(text, float)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def unit_interval(text: str) -> float:
    """A number in [0, 1] (a similarity)."""
    value = _number(text, float)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def open_fraction(text: str) -> float:
    """A share strictly between 0 and 1 (a validation fraction)."""
    value = _number(text, float)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {text}")
    return value


def memory_size(text: str) -> int:
    """A memory budget (512M, 2G, 1.5GiB, a number of MiB) as whole MiB."""
    from ..memory import parse_size

    try:
        return parse_size(text) // 2**20
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_json_flag(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print the results as JSON (for scripts)")


# ---- models ---------------------------------------------------------------------------
def check_model(name: str, *, pretrained: bool = True, option: str = "--model"):
    """The model's spec; a one-line error for an unknown model, or for weights that cannot be had
    (not cached while downloads are off), before any data loads."""
    from ..registry import DOWNLOAD, get_spec
    from ..weights import offline

    try:
        spec = get_spec(name)
    except KeyError as exc:
        raise CLIError(f"{option}: {exc.args[0]}") from None
    if pretrained and spec.weights_status() == DOWNLOAD and offline():
        raise CLIError(f"{option} {name}: its weights are not cached ({spec.weights_file()}) and downloads are "
                       "off (TL_STUDIO_OFFLINE or HF_HUB_OFFLINE); connect once, copy the file there, use "
                       "efficientnet_lite0 (embedded), or --random-weights")
    return spec


# ---- plans ----------------------------------------------------------------------------
def read_plan(path: str | Path, option: str = "--plan"):
    """A :class:`~tl_studio.plan.Plan` from a plan file, ``recommend --json`` output or a run's config.json.

    The last two hold the plan under their ``plan`` key; a bare plan is the
    document itself.
    """
    from ..plan import Plan, PlanError

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except IsADirectoryError:
        config = path / "config.json"
        hint = f"; a run's plan is in {config}" if config.is_file() else ""
        raise CLIError(f"{option} {path}: is a folder, not a JSON file{hint}") from None
    except OSError as exc:
        raise CLIError(f"{option} {path}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise CLIError(f"{option} {path}: not a text file") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CLIError(f"{option} {path}: not valid JSON ({exc})") from None
    if isinstance(doc, dict) and isinstance(doc.get("plan"), dict):
        doc = doc["plan"]  # recommend --json, or a run's config.json
    try:
        return Plan.from_dict(doc)
    except PlanError as exc:
        raise CLIError(f"{option} {path}: {exc}") from None


# ---- printing results (stdout) ----------------------------------------------------------
def paragraphs(text: str, *, indent: str = "", width: int | None = None) -> str:
    """Prose wrapped to the terminal (at most 100 columns), paragraph by paragraph."""
    import shutil
    import textwrap

    width = width or min(shutil.get_terminal_size((100, 24)).columns, 100)
    return "\n\n".join(
        textwrap.fill(" ".join(p.split()), width, initial_indent=indent, subsequent_indent=indent)
        for p in text.split("\n\n")
        if p.strip()
    )


def print_table(df) -> None:
    """A table for people: every row and column, text left-aligned (pandas right-aligns it)."""
    import pandas as pd

    left = {}
    for col in df.columns:
        if len(df) and not pd.api.types.is_numeric_dtype(df[col]):
            width = int(df[col].astype(str).str.len().max())
            left[col] = lambda v, w=width: f"{v!s:<{w}}"
    with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 250,
                           "display.max_colwidth", None):
        print(df.to_string(index=False, formatters=left, justify="left"))


def print_json(data) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, default=_json_default))


def _json_default(value):
    if isinstance(value, float) and not math.isfinite(value):  # NaN and inf are not JSON
        return None
    return str(value)


def records(df) -> list[dict]:
    """A DataFrame as JSON-ready rows (pandas' own conversion: NaN becomes null)."""
    return json.loads(df.to_json(orient="records"))
