"""What every command shares: the user-error exception and printing results.

Every command prints a table for people and, with ``--json``, JSON for
scripts. On bad input a command raises :class:`CLIError`: one line, exit
status 2.
"""

from __future__ import annotations

import json


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def print_table(df) -> None:
    import pandas as pd

    with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 200):
        print(df.to_string(index=False))


def print_json(data) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def records(df) -> list[dict]:
    """A DataFrame as JSON-ready rows (pandas' own conversion: NaN becomes null)."""
    return json.loads(df.to_json(orient="records"))
