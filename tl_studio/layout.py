"""A model's layout: its layers, their parameters, BatchNorm membership, shapes and FLOPs.

Computed once per model from one dry forward pass at the model's input size
(random weights: shapes, FLOPs and parameter names do not depend on them) and
cached. Everything that asks "which layers does this model have, what is in
them, how big are they" reads this one value: the layer table (CLI and UI),
plan validation, the layer states under a plan (:mod:`tl_studio.states`), the
model surgery, the feature cache's sizes and the recommender.
"""

from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .registry import get_spec

_lock = threading.Lock()


def _count_cpu_attention() -> None:
    """Count the CPU's fused attention as torch counts the GPU's (it has no formula, so read 0 FLOPs).

    timm's ViTs (and torchvision's MultiheadAttention) run ``scaled_dot_product_attention``,
    which on the CPU dispatches to this op: without it a ViT block's attention is missing from its FLOPs.
    """
    from torch.utils import flop_counter

    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    gpu = flop_counter.flop_registry.get(torch.ops.aten._scaled_dot_product_flash_attention)
    if op is not None and gpu is not None and op not in flop_counter.flop_registry:
        flop_counter.flop_registry[op] = gpu  # same arguments: query, key, value first


_count_cpu_attention()
_BN = (nn.modules.batchnorm._BatchNorm,)
# Modules that use their children's weights functionally count as one leaf.
_ATOMIC = (nn.MultiheadAttention,)


@dataclass(frozen=True)
class ParamInfo:
    name: str  # full name, as in the base model's stage tree ("layer1.0.bn1.weight")
    numel: int
    is_bn: bool  # belongs to a BatchNorm layer (the plan's "bn" policy applies to it)


@dataclass(frozen=True)
class LayerInfo:
    """One coarse layer (a stage: stem, block, pooling...) of the model."""

    index: int  # depth among all stages, classifier included
    name: str
    kind: str
    module: str  # class name of the stage's root module
    group: str
    role: str  # "body" or "classifier"
    params: tuple[ParamInfo, ...]
    flops: int  # forward FLOPs per image
    output_shape: tuple[int, ...]  # per image (no batch dimension)

    @property
    def n_params(self) -> int:
        return sum(p.numel for p in self.params)

    @property
    def pooled_width(self) -> int:
        """Width after global pooling: channels of a (C, H, W) map, the last dim otherwise."""
        return pooled_width(self.output_shape)


@dataclass(frozen=True)
class FineRow:
    """One leaf module (or a parameter held directly by a container) inside a layer."""

    depth: int
    name: str
    kind: str
    module: str
    group: str
    role: str
    params: int
    flops: int
    output_shape: tuple[int, ...]


@dataclass(frozen=True)
class Layout:
    model: str
    input_size: int
    stages: tuple[LayerInfo, ...]  # every stage in order, the classifier last
    fine: tuple[FineRow, ...]
    known_names: frozenset[str]  # every name a plan may use: layers, modules, parameters, families

    @functools.cached_property
    def body(self) -> tuple[LayerInfo, ...]:
        return tuple(s for s in self.stages if s.role == "body")

    @functools.cached_property
    def names(self) -> tuple[str, ...]:
        """Body layer names in order (the classifier, which the new head replaces, is not one)."""
        return tuple(s.name for s in self.body)

    @functools.cached_property
    def index(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.names)}

    @functools.cached_property
    def ends(self) -> tuple[float, ...]:
        """Share of the body's forward FLOPs done after each body layer (the last is 1.0)."""
        flops = [float(s.flops) for s in self.body]
        total = sum(flops) or 1.0
        out, acc = [], 0.0
        for f in flops:
            acc += f
            out.append(acc / total)
        if out:
            out[-1] = 1.0
        return tuple(out)

    def layer(self, name: str) -> LayerInfo:
        return self.body[self.index[name]]

    def width(self, names) -> int:
        """Width of the head's input when it reads the pooled outputs of ``names``."""
        return sum(self.layer(n).pooled_width for n in names)

    @functools.cached_property
    def has_batchnorm(self) -> bool:
        return any(p.is_bn for s in self.body for p in s.params)


def pooled_width(shape: tuple[int, ...]) -> int:
    if len(shape) == 3:  # C, H, W
        return shape[0]
    return shape[-1]  # tokens (N, D) or a vector (D,)


def _shape(out) -> tuple[int, ...]:
    if isinstance(out, torch.Tensor):
        return tuple(int(d) for d in out.shape[1:])
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return _shape(out[0])
    return ()


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


def _params(stage: nn.Module, prefix: str) -> tuple[ParamInfo, ...]:
    out = []
    for mod_name, mod in stage.named_modules(prefix=prefix):
        for p_name, p in mod.named_parameters(prefix=mod_name, recurse=False):
            out.append(ParamInfo(p_name, p.numel(), isinstance(mod, _BN)))
    return tuple(out)


def _build(model_name: str) -> Layout:
    spec = get_spec(model_name)
    # A throwaway random model: keep the caller's RNG stream untouched, so a
    # seeded run does not depend on whether this layout was cached already.
    with torch.random.fork_rng(devices=[]):
        base = spec.build(pretrained=False).eval()
    stage_list = spec.stages(base)
    size = spec.preprocess.input_size
    x = torch.zeros(1, 3, size, size)
    stages, fine = [], []
    known: set[str] = set()
    with torch.inference_mode():
        for depth, st in enumerate(stage_list):
            shapes: dict[str, tuple[int, ...]] = {}
            leaves = list(_leaves(st.module, st.name))
            hooks = [
                leaf.register_forward_hook(lambda m, i, o, n=name: shapes.__setitem__(n, _shape(o)))
                for name, leaf in leaves
            ]
            with FlopCounterMode(display=False) as counter:
                x = st.module(x)
            for h in hooks:
                h.remove()
            counts = counter.get_flop_counts()
            root = type(st.module).__name__
            stages.append(LayerInfo(depth, st.name, st.kind, root, st.group, st.role,
                                    _params(st.module, st.name), int(counter.get_total_flops()), _shape(x)))
            for name, leaf in leaves:
                rel = name[len(st.name) + 1:] if name != st.name else ""
                key = f"{root}.{rel}" if rel else root
                fine.append(FineRow(depth, name, st.kind, type(leaf).__name__, st.group, st.role,
                                    sum(p.numel() for p in leaf.parameters()),
                                    int(sum(counts.get(key, {}).values())), shapes.get(name, ())))
            # Parameters held directly by a container (ViT's class token and
            # position embedding) belong to no leaf: give them a row of their own.
            leaf_names = {name for name, _ in leaves}
            for pname, p in st.module.named_parameters(prefix=st.name, recurse=True):
                owners = {pname.rsplit(".", i)[0] for i in range(1, pname.count(".") + 1)}
                if not owners & leaf_names:
                    fine.append(FineRow(depth, pname, "parameter", "Parameter", st.group, st.role,
                                        p.numel(), 0, tuple(p.shape)))
            if st.role == "body":
                known.update(n for n, _ in st.module.named_modules(prefix=st.name))
                known.update(n for n, _ in st.module.named_parameters(prefix=st.name))
    # Dotted prefixes name whole families of layers ("layer3", "blocks", "features").
    known.update(n.rsplit(".", i)[0] for n in list(known) for i in range(1, n.count(".") + 1))
    return Layout(model_name, size, tuple(stages), tuple(fine), frozenset(known))


@functools.cache
def _cached(model_name: str) -> Layout:
    return _build(model_name)


def layout(model_name: str) -> Layout:
    """The model's layout (computed once per model; a KeyError names unknown models)."""
    get_spec(model_name)  # a clear KeyError before taking the lock
    with _lock:  # one dry run per model even when several users ask at once
        return _cached(model_name)


def shape_text(shape: tuple[int, ...]) -> str:
    """'112x14x14': how tables show a shape."""
    return "x".join(str(d) for d in shape)


def numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)
