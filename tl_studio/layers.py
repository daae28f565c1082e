"""The layer table: every registered model's layers as one ordered DataFrame.

Output shapes and FLOPs come from one dry forward pass at the model's input
size (random weights: shapes and FLOPs do not depend on them), cached per
model, so the UI and the CLI show exactly the same table.
"""

from __future__ import annotations

import functools
import threading

import pandas as pd
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .registry import get_spec

COARSE, FINE = "coarse", "fine"
COLUMNS = ["depth", "name", "kind", "module", "group", "role", "params", "flops", "output_shape"]

_lock = threading.Lock()


def _shape(out) -> str:
    if isinstance(out, torch.Tensor):
        return "x".join(str(d) for d in out.shape[1:])
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return _shape(out[0])
    return ""


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# Modules that use their children's weights functionally count as one leaf.
_ATOMIC = (nn.MultiheadAttention,)


def _leaves(module: nn.Module, prefix: str):
    """Leaf modules below a stage, with their full names."""
    skip: list[str] = []
    for name, sub in module.named_modules(prefix=prefix):
        if any(name.startswith(s + ".") for s in skip):
            continue
        if isinstance(sub, _ATOMIC):
            skip.append(name)
            yield name, sub
        elif not list(sub.children()):
            yield name, sub


@functools.cache
def _tables(model_name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    spec = get_spec(model_name)
    # A throwaway random model: keep the caller's RNG stream untouched, so a
    # seeded run does not depend on whether this table was cached already.
    with torch.random.fork_rng(devices=[]):
        base = spec.build(pretrained=False).eval()
    stage_list = spec.stages(base)
    size = spec.preprocess.input_size
    x = torch.zeros(1, 3, size, size)
    coarse, fine = [], []
    with torch.inference_mode():
        for depth, st in enumerate(stage_list):
            shapes: dict[str, str] = {}
            hooks = []
            for name, leaf in _leaves(st.module, st.name):
                hooks.append(
                    leaf.register_forward_hook(lambda m, i, o, n=name: shapes.__setitem__(n, _shape(o)))
                )
            with FlopCounterMode(display=False) as counter:
                x = st.module(x)
            for h in hooks:
                h.remove()
            counts = counter.get_flop_counts()
            root = type(st.module).__name__
            coarse.append(
                {
                    "depth": depth,
                    "name": st.name,
                    "kind": st.kind,
                    "module": root,
                    "group": st.group,
                    "role": st.role,
                    "params": _count(st.module),
                    "flops": int(counter.get_total_flops()),
                    "output_shape": _shape(x),
                }
            )
            leaves = list(_leaves(st.module, st.name))
            for name, leaf in leaves:
                rel = name[len(st.name) + 1 :] if name != st.name else ""
                key = f"{root}.{rel}" if rel else root
                fine.append(
                    {
                        "depth": depth,
                        "name": name,
                        "kind": st.kind,
                        "module": type(leaf).__name__,
                        "group": st.group,
                        "role": st.role,
                        "params": _count(leaf),
                        "flops": int(sum(counts.get(key, {}).values())),
                        "output_shape": shapes.get(name, ""),
                    }
                )
            # Parameters held directly by a container (ViT's class token and
            # position embedding) belong to no leaf: give them a row of their own.
            leaf_names = {name for name, _ in leaves}
            for pname, p in st.module.named_parameters(prefix=st.name, recurse=True):
                owners = {pname.rsplit(".", i)[0] for i in range(1, pname.count(".") + 1)}
                if not owners & leaf_names:
                    fine.append(
                        {
                            "depth": depth,
                            "name": pname,
                            "kind": "parameter",
                            "module": "Parameter",
                            "group": st.group,
                            "role": st.role,
                            "params": p.numel(),
                            "flops": 0,
                            "output_shape": "x".join(str(d) for d in p.shape),
                        }
                    )
    return pd.DataFrame(coarse, columns=COLUMNS), pd.DataFrame(fine, columns=COLUMNS)


def layer_table(model_name: str, granularity: str = COARSE) -> pd.DataFrame:
    """The ordered layer table of a registered model (a copy: callers may edit it)."""
    if granularity not in (COARSE, FINE):
        raise ValueError(f"granularity must be {COARSE!r} or {FINE!r}, not {granularity!r}")
    with _lock:  # one dry run per model even when several users ask at once
        coarse, fine = _tables(model_name)
    return (coarse if granularity == COARSE else fine).copy()
