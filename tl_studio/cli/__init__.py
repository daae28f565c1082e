"""The ``tl-studio`` command line: the top layer, one module a command.

    main.py        the parser and ``main`` (the console script and ``python -m tl_studio``): exit statuses
    common.py      what every command shares: the parser, checked argument types, :class:`CLIError`,
                   reading plan files, printing tables and JSON (stdout: results only)
    progress.py    progress of long steps on stderr: a bar on a terminal, a line every few seconds elsewhere
    models.py      tl-studio models         layers.py    tl-studio layers MODEL
    data.py        tl-studio data PATH      recommend.py tl-studio recommend
    train.py       tl-studio train DATA     predict.py   tl-studio predict IMAGE...
    export.py      tl-studio export RUN     evaluate.py  tl-studio evaluate RUN
    runs.py        tl-studio runs           ui.py        tl-studio ui

Each command module has ``add_parser(sub)`` and ``run(args)``. Parsing stays
cheap: a command imports the engine (torch, pandas) inside ``run``, so
``--help`` never loads torch (a test checks it). Nothing in the engine or the
UI imports this package.
"""

from .common import CLIError
from .main import main

__all__ = ["CLIError", "main"]
