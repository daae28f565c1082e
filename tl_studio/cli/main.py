"""The ``tl-studio`` parser and entry point (``[project.scripts]`` and ``python -m tl_studio``).

Arguments are parsed and checked before anything heavy is imported: the
command modules import the engine (torch, pandas, gradio) inside ``run``, so
``tl-studio --help``, ``tl-studio COMMAND --help`` and ``tl-studio runs``
never load torch.

Under torchrun (several workers) ``train`` runs inside torch's error
``record``: a failure propagates (exit status 1) so that torchrun's error
summary names the rank and the exception.

Exit status: 0 done; 2 a user error (bad input, a missing file, weights not
cached: one line naming the input, a traceback only with ``-v``); 1 a bug
(with its traceback); 130 interrupted.
"""

from __future__ import annotations

import os
import sys
import traceback

from ..errors import InputError
from ..version import __version__
from . import cache, data, evaluate, export, layers, models, predict, recommend, runs, train, ui
from .common import Parser, UsageError

# In the order ``tl-studio --help`` lists them.
COMMANDS = (models, layers, ui, data, train, predict, export, recommend, evaluate, runs, cache)


def parser() -> Parser:
    p = Parser(prog="tl-studio", description="Transfer learning on images.")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="debug logging, libraries' own messages, and tracebacks for errors")
    p.add_argument("--version", action="version", version=f"tl-studio {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return p


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (a KeyError's without its quotes)."""
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}"
    return " ".join(text.split()) or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return 2
    from ..runtime import configure_logging, tune_allocator

    configure_logging(args.verbose)
    tune_allocator()
    name = f"tl-studio {args.command}"
    if args.command == "train" and _under_torchrun():
        # torchrun's error summary names the rank and the exception that ended it: the entry point is
        # wrapped in torch's ``record``, and a failure propagates to it instead of becoming an exit status.
        from ..train.distributed import record

        return record(_dispatch)(args, name, True)
    return _dispatch(args, name, False)


def _under_torchrun() -> bool:
    env = os.environ
    return all(k in env for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")) and env["WORLD_SIZE"] != "1"


def _dispatch(args, name: str, reraise: bool) -> int:
    try:
        return int(args.func(args) or 0)
    except (InputError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as exc:
        # The user's to fix: one line. With -v, where it came from too.
        if args.verbose and not reraise:
            traceback.print_exc()
        print(f"{name}: error: {one_line(exc)}", file=sys.stderr)
        if reraise:
            raise
        return 2
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (``| head``): not an error. Python's recipe: point stdout at
        # devnull so that the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:  # a bug: keep everything needed to report it
        if reraise:  # the interpreter prints the traceback, torchrun's summary names it
            raise
        traceback.print_exc()
        print(f"{name}: internal error ({type(exc).__name__}: {one_line(exc)}); this is a bug in tl-studio, "
              "please report it with the lines above", file=sys.stderr)
        return 1
