"""A timm model's layers, from timm's own knowledge: its stages for the checklist.

Every model in the registry is a chain of stages whose composition is the
model (see :mod:`tl_studio.stages`). For a timm model that chain is derived,
not written by hand:

* ``group_matcher(coarse=False)`` says which parameters form one layer (the
  stem, each block, a final norm), exactly as ``timm.models._manipulate.
  group_parameters`` groups them for layer-wise learning rates. timm folds a
  final norm or 1x1 conv into the last block (``MATCH_PREV_GROUP``); here it
  becomes a layer of its own, so a cut can keep a block without it.
* One dry ``forward_features`` pass with hooks records which modules run, in
  which order. A module whose parameters all lie in one layer is a unit; a
  container spanning several layers (``layer1``, ``stages.2``, ``blocks``) is
  opened into the calls it makes.
* Work a model does outside its modules (a ViT's class token and position
  embedding, ``_pos_embed``) stays in timm's code: the stem is a *view* of
  the model (views.py), an object of the model's own class that holds only the
  stem's modules and runs ``forward_features`` with every later module standing
  aside. Pooling is such a view too: ``forward_head(x, pre_logits=True)`` with
  the classifier standing aside, so a ViT's tokens are pooled as timm pools
  them (class token or average, per ``global_pool``), a ConvNeXt's with its
  head norm.
* ``get_classifier()`` is the layer the new head replaces; ``feature_info``
  names the coarse stages the layers belong to (for plots).

The stages share their modules with the model, so a state dict of the stages
is the model's, and the result is checked once against ``model(x)``.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from ..stages import Stage
from .views import pool_view, view

log = logging.getLogger(__name__)

MATCH_PREV = 99999  # timm.models._manipulate.MATCH_PREV_GROUP: "belongs to the previous group"
OWN_LAYER = 99998  # sorts where MATCH_PREV does, but opens a layer of its own


class UnsupportedModel(ValueError):
    """A timm model that is not a chain of layers this decomposition understands; the message says why."""


@dataclass
class _Call:
    name: str
    module: nn.Module
    children: list


def _trace(model: nn.Module, x: torch.Tensor) -> tuple[list[_Call], set[str]]:
    """The module calls ``forward_features`` makes, as a tree, and the children ``forward_head`` calls (one dry pass)."""
    root = _Call("", model, [])
    stack = [root]

    def pre(name):
        def hook(module, args):
            call = _Call(name, module, [])
            stack[-1].children.append(call)
            stack.append(call)
        return hook

    def post(module, args, out):
        stack.pop()

    handles = []
    for name, m in model.named_modules():
        if m is not model:
            handles += [m.register_forward_pre_hook(pre(name)), m.register_forward_hook(post)]
    try:
        with torch.no_grad():
            x = model.forward_features(x)
            features = list(root.children)
            model.forward_head(x)
    finally:
        for h in handles:
            h.remove()
    return features, {c.name.split(".")[0] for c in root.children[len(features):]}


def _example(model: nn.Module, n: int, size: int) -> torch.Tensor:
    """A fixed random batch on the model's device, in its dtype."""
    p = next(model.parameters(), None)
    x = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))
    return x if p is None else x.to(p.device, p.dtype)


def _layer_ids(model: nn.Module) -> dict[str, int]:
    """Parameter name -> layer index, from the model's group_matcher (final norms split off)."""
    from timm.models._manipulate import group_parameters

    matcher = model.group_matcher(coarse=False)
    if callable(matcher):
        return group_parameters(model, matcher, reverse=True)
    split = {}
    for key, spec in matcher.items():
        if isinstance(spec, (list, tuple)):
            spec = [(rx, (OWN_LAYER,) if suffix == (MATCH_PREV,) else suffix) for rx, suffix in spec]
        split[key] = spec
    return group_parameters(model, split, reverse=True)


@dataclass(frozen=True)
class StagePlan:
    """Where a model's stages are, by module path: worked out once per model, applied to every copy of it."""

    stem_view: tuple[str, ...] | None  # children kept by the stem view (None: the stem is a plain chain)
    body: tuple[tuple[str, tuple[str, ...]], ...]  # (stage name, module paths in call order)
    pool_keep: tuple[str, ...]  # children the pooling view keeps
    classifier: str  # path of get_classifier()
    groups: tuple[str, ...]  # coarse group of each body stage (feature_info), for plots
    kinds: tuple[str, ...]


def _check_protocol(model: nn.Module) -> str:
    """The path of get_classifier(), after checking the model answers timm's questions."""
    name_of = type(model).__name__
    for attr in ("group_matcher", "forward_features", "forward_head", "get_classifier"):
        if not hasattr(model, attr):
            raise UnsupportedModel(f"{name_of} has no {attr}(): not a timm classification model")
    if getattr(model, "output_fmt", "NCHW") not in ("NCHW", "NLC"):
        raise UnsupportedModel(f"{name_of} outputs {model.output_fmt} feature maps; only NCHW maps and tokens "
                               "are supported")
    classifier = model.get_classifier()
    path_of = {id(m): name for name, m in model.named_modules()}
    if not isinstance(classifier, nn.Module) or id(classifier) not in path_of:
        raise UnsupportedModel(f"{name_of}.get_classifier() is not one module of the model (a distilled model "
                               "with two heads?); such models are not supported")
    return path_of[id(classifier)]


def _units(model: nn.Module, calls: list[_Call], under: dict[str, set[int]]) -> list[tuple[str, nn.Module, int | None]]:
    """The calls of forward_features opened down to modules within one layer: (path, module, layer or None)."""
    units: list[tuple[str, nn.Module, int | None]] = []

    def expand(call: _Call) -> None:
        lids = under.get(call.name, set())
        if len(lids) <= 1:
            units.append((call.name, call.module, next(iter(lids)) if lids else None))
        elif call.children:
            for child in call.children:
                expand(child)
        else:
            raise UnsupportedModel(f"{type(model).__name__}: {call.name} spans several layers but calls no modules")

    for call in calls:
        expand(call)
    paths = [u[0] for u in units]
    if len(paths) != len(set(paths)):
        raise UnsupportedModel(f"{type(model).__name__}: a module runs twice in forward_features; "
                               "not a chain of layers")
    return [u for u in units if not isinstance(u[1], nn.Identity)]


def _stem_view(model, calls, head_calls, units, layer_of, under) -> tuple[tuple[str, ...] | None, list]:
    """Parameters the model holds itself (a ViT's class token) are used by its own code, not by a module:
    the stem then is a view of the model. Returns (children the view keeps, the units after the stem)."""
    name_of = type(model).__name__
    own = [n for n, p in model._parameters.items() if p is not None]
    if not own:
        return None, units
    stem_lids = {layer_of[n] for n in own}
    if len(stem_lids) != 1:
        raise UnsupportedModel(f"{name_of}: its own parameters {', '.join(own)} fall in several layers")
    stem_lid = stem_lids.pop()
    first_other = next((i for i, u in enumerate(units) if u[2] is not None and u[2] != stem_lid), len(units))
    stem_units, units = units[:first_other], units[first_other:]
    tops = {u[0].split(".")[0] for u in stem_units}
    if any(under.get(top, set()) - {stem_lid} for top in tops):
        raise UnsupportedModel(f"{name_of}: its stem shares a module with later layers")
    if any(u[2] == stem_lid for u in units):
        raise UnsupportedModel(f"{name_of}: stem parameters are used after the first block")
    # The view keeps what the stem calls and what nobody calls but holds no parameters:
    # a stem may use a module without calling it (EVA's rotary embedding).
    called = {c.name.split(".")[0] for c in calls} | head_calls
    idle = {n for n, m in model._modules.items() if m is not None and n not in called and not under.get(n)}
    keep = tops | idle | set(own) | {n for n, b in model._buffers.items() if b is not None}
    return tuple(sorted(keep)), units


def _body(units, viewed_stem: bool, name_of: str) -> list[tuple[str, list[str]]]:
    """(stage name, module paths) of the body.

    The first layer (the stem) is one stage however many modules it has; after
    it each module with parameters is a stage of its own, named as in timm. (timm
    groups a ConvNeXt downsample with the block after it, for learning rates; a
    checklist is clearer with both.) Parameter-free modules join the stage before.
    """
    body: list[tuple[str, list[str]]] = [("stem", [])]
    stem_lid = -1 if viewed_stem else None
    done: set[int] = set()
    done_last = None
    for path, _module, lid in units:
        if stem_lid is None and lid is not None:
            stem_lid = lid
        if lid is None or (lid == stem_lid and len(body) == 1 and not viewed_stem):
            body[-1][1].append(path)
            continue
        if lid in done and lid != done_last:
            raise UnsupportedModel(f"{name_of}: the modules of one layer do not run one after another ({path})")
        body.append((path, [path]))
        done.add(lid)
        done_last = lid
    if not viewed_stem and len(body[0][1]) == 1:
        body[0] = (body[0][1][0], body[0][1])  # a stem of one module keeps its own name
    return body


def plan_stages(model: nn.Module, input_size: int) -> StagePlan:
    """Work out the stages of ``model`` (a timm model) from one dry pass at ``input_size``."""
    name_of = type(model).__name__
    classifier = _check_protocol(model)
    layer_of = _layer_ids(model)
    under: dict[str, set[int]] = {}
    for pname, lid in layer_of.items():
        parts = pname.split(".")
        for i in range(len(parts)):
            under.setdefault(".".join(parts[:i]), set()).add(lid)
    was_training = model.training
    model.eval()
    try:
        calls, head_calls = _trace(model, _example(model, 1, input_size))
    finally:
        model.train(was_training)
    stem_view, units = _stem_view(model, calls, head_calls, _units(model, calls, under), layer_of, under)
    body = _body(units, stem_view is not None, name_of)
    names = [b[0] for b in body]
    if len(set(names) | {"pool"}) != len(names) + 1:
        raise UnsupportedModel(f"{name_of}: its layers' names collide ({', '.join(names)})")
    # The pooling view: what forward_head calls, and parameters nothing calls (so that some layer holds them).
    called = {c.name.split(".")[0] for c in calls}
    pool_keep = tuple(n for n, m in model._modules.items() if m is not None and n not in called
                      and (n in head_calls or under.get(n)))
    features = [f["module"] for f in getattr(model, "feature_info", []) if isinstance(f, dict) and f.get("module")]
    modules = dict(model.named_modules())
    groups = tuple(_group(name, features, i) for i, (name, _) in enumerate(body))
    kinds = tuple(_kind(name, [modules[p] for p in paths], i) for i, (name, paths) in enumerate(body))
    return StagePlan(stem_view, tuple((n, tuple(p)) for n, p in body), pool_keep, classifier, groups, kinds)


def _group(name: str, features: list[str], index: int) -> str:
    """The coarse stage a layer belongs to: the feature_info stage it lies in, else its top-level name.

    A ViT lists every block in feature_info; its blocks then group as one ("blocks").
    """
    inside = [f for f in features if name.startswith(f + ".")]
    if inside:
        return max(inside, key=len)
    if name in features and len(features) <= 6:
        return name
    return "stem" if index == 0 else name.split(".")[0]


def _kind(name: str, modules: list[nn.Module], index: int) -> str:
    if index == 0:
        return "stem"
    if "downsample" in name:
        return "downsample"
    if len(modules) >= 1 and all("Norm" in type(m).__name__ for m in modules):
        return "norm"
    if isinstance(modules[0], nn.Conv2d):
        return "conv"
    return "block"


def build_stages(model: nn.Module, plan: StagePlan) -> list[Stage]:
    """The stages of one model (sharing its modules) as ``plan`` places them."""
    out = []
    for i, ((name, paths), group, kind) in enumerate(zip(plan.body, plan.groups, plan.kinds)):
        if i == 0 and plan.stem_view is not None:
            module = view(model, set(plan.stem_view), "Stem")
        elif len(paths) == 1 and name == paths[0]:
            module = model.get_submodule(paths[0])
        else:
            module = nn.Sequential(OrderedDict((p.replace(".", "_"), model.get_submodule(p)) for p in paths))
        out.append(Stage(name, module, kind, group))
    out.append(Stage("pool", pool_view(model, plan.pool_keep, plan.classifier), "pool", "head"))
    out.append(Stage(plan.classifier, model.get_submodule(plan.classifier), "fc", "classifier", role="classifier"))
    return out


def check_stages(model: nn.Module, stages: list[Stage], input_size: int) -> None:
    """The stages, run in order, must compute ``model(x)``, and hold each of its parameters once."""
    name_of = type(model).__name__
    owned: dict[int, str] = {}
    for st in stages:
        for pname, p in st.module.named_parameters(prefix=st.name):
            if id(p) in owned:
                raise UnsupportedModel(f"{name_of}: parameter {pname} also belongs to {owned[id(p)]}")
            owned[id(p)] = pname
    missing = [n for n, p in model.named_parameters() if id(p) not in owned]
    if missing:
        raise UnsupportedModel(f"{name_of}: no layer holds {', '.join(missing[:5])}")
    was_training = model.training
    model.eval()
    try:
        x = _example(model, 2, input_size)
        with torch.no_grad():
            want = model(x)
            got = x
            for st in stages:
                got = st.module(got)
    except Exception as exc:  # a stage that cannot run on its own
        raise UnsupportedModel(f"{name_of}: its layers cannot run one after another ({type(exc).__name__}: {exc}); "
                               "its forward passes more than one tensor between layers") from None
    finally:
        model.train(was_training)
    if got.shape != want.shape or not torch.allclose(got, want, atol=1e-5, rtol=1e-4):
        raise UnsupportedModel(f"{name_of}: run one after another, its layers do not compute the model's output; "
                               "its forward does work between layers that this decomposition does not know")
