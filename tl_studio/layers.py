"""The layer table: a model's layout as one ordered DataFrame, for people and scripts.

A view of :func:`tl_studio.layout.layout` (one dry forward pass per model,
cached), so the UI and the CLI show exactly the same table.
"""

from __future__ import annotations

import pandas as pd

from .layout import layout, shape_text

COARSE, FINE = "coarse", "fine"
COLUMNS = ["depth", "name", "kind", "module", "group", "role", "params", "flops", "output_shape"]


def layer_table(model_name: str, granularity: str = COARSE) -> pd.DataFrame:
    """The ordered layer table of a registered model (a new frame: callers may edit it)."""
    if granularity not in (COARSE, FINE):
        raise ValueError(f"granularity must be {COARSE!r} or {FINE!r}, not {granularity!r}")
    lay = layout(model_name)
    if granularity == COARSE:
        rows = [(s.index, s.name, s.kind, s.module, s.group, s.role, s.n_params, s.flops, shape_text(s.output_shape))
                for s in lay.stages]
    else:
        rows = [(r.depth, r.name, r.kind, r.module, r.group, r.role, r.params, r.flops, shape_text(r.output_shape))
                for r in lay.fine]
    return pd.DataFrame(rows, columns=COLUMNS)
