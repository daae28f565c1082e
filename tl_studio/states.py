"""Which parameters train under a plan: the one rule.

:func:`layer_states` is the only place that decides it. The checklist, the
network picture, the counts line, ``tl-studio layers``, the run's stored
counts and the engine's ``requires_grad`` (surgery.py) all read its result,
so they cannot disagree. :func:`plan_summary` is the one-line form the run
history shows (stored in a run's config.json when training starts).

A layer's *state* is frozen, trains or removed: what the user chose for the
layer as a whole (or removed by the cut). Beside it stand annotations that are
not states of their own: *tapped* (its pooled output feeds the head),
*bn_trains* (its BatchNorm trains although the layer is frozen: the plan's
``bn`` policy), *bn_eval* (its BatchNorm runs in eval mode with fixed
statistics whether the layer trains or not: ``bn`` "eval") and *partial* (finer entries in the plan give some of its
parameters another choice). The parameter counts are exact per parameter.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .layout import Layout, layout
from .plan import FROZEN, TRAIN, Plan, PlanError

FROZEN_S, TRAINS_S, REMOVED_S, HEAD_S = "frozen", "trains", "removed", "new head"
STATES = (FROZEN_S, TRAINS_S, REMOVED_S, HEAD_S)
# Training phases (train/loop.py) as plans: "head" trains only the new head
# (the linear probe before fine-tuning), "all" every kept layer.
PHASES = ("plan", "head", "all")


@dataclass(frozen=True)
class LayerState:
    name: str
    index: int
    state: str  # frozen | trains | removed
    chosen: str  # the user's choice for the layer ("frozen" | "train"): what its checkbox shows
    tapped: bool
    bn_trains: bool  # BatchNorm parameters train though the layer is frozen
    bn_eval: bool  # a kept layer's BatchNorm runs in eval mode, statistics fixed (plan bn "eval")
    partial: bool  # finer plan entries give some parameters another choice
    params: int
    trainable: int  # parameters that train (0 when removed)
    flops: int


@dataclass(frozen=True)
class HeadInfo:
    params: int
    flops: int
    width: int  # input features


@dataclass(frozen=True)
class PlanStates:
    plan: Plan
    layers: tuple[LayerState, ...]
    cut: int  # index of the last kept body layer
    taps: tuple[int, ...]
    trainable_names: frozenset[str]  # full names of the body parameters that train
    head: HeadInfo

    # ---- counts: exact integers ---------------------------------------------------
    @property
    def kept(self) -> tuple[LayerState, ...]:
        return self.layers[: self.cut + 1]

    @property
    def trainable(self) -> int:
        """Parameters that train, the new head's included."""
        return sum(s.trainable for s in self.kept) + self.head.params

    @property
    def frozen(self) -> int:
        return sum(s.params - s.trainable for s in self.kept)

    @property
    def removed(self) -> int:
        return sum(s.params for s in self.layers[self.cut + 1:])

    @property
    def kept_flops(self) -> int:
        return sum(s.flops for s in self.kept)

    @property
    def frozen_compute_share(self) -> float:
        """Share of the kept body's forward FLOPs done in frozen layers (by state, as the picture shows them)."""
        kept = self.kept_flops
        frozen = sum(s.flops for s in self.kept if s.state == FROZEN_S)
        return frozen / kept if kept else 0.0

    @property
    def ticked(self) -> list[str]:
        """The checklist's value: layers the user chose to train (removed ones keep their choice)."""
        return [s.name for s in self.layers if s.chosen == TRAIN]

    def summary(self) -> dict:
        return {
            "trainable": self.trainable,
            "frozen": self.frozen,
            "removed": self.removed,
            "head": self.head.params,
            "kept_layers": self.cut + 1,
            "layers": len(self.layers),
            "frozen_compute_share": self.frozen_compute_share,
            "forward_flops": self.kept_flops + self.head.flops,
        }

    def rows(self) -> list[dict]:
        """One plain row per body layer and one for the new head (tables, the picture, JSON)."""
        out = [
            {"index": s.index, "name": s.name, "state": s.state, "tapped": s.tapped, "bn_trains": s.bn_trains,
             "bn_eval": s.bn_eval, "partial": s.partial, "params": s.params, "trainable": s.trainable, "flops": s.flops}
            for s in self.layers
        ]
        out.append({"index": len(self.layers), "name": HEAD_S, "state": HEAD_S, "tapped": False,
                    "bn_trains": False, "bn_eval": False, "partial": False, "params": self.head.params,
                    "trainable": self.head.params, "flops": self.head.flops})
        return out


def validate(plan: Plan, lay: Layout | None = None) -> tuple[int, list[int]]:
    """Check a plan against its model without building weights: (last kept index, tap indices)."""
    if lay is None:
        try:
            lay = layout(plan.model)
        except KeyError as exc:
            raise PlanError(f"model: {exc.args[0]}") from None
    elif lay.model != plan.model:
        raise PlanError(f"model: the plan is for {plan.model}, the layout for {lay.model}")
    return plan.resolve(lay.names, lay.known_names)


def head_info(plan: Plan, lay: Layout, cut: int, taps: list[int] | tuple[int, ...]) -> HeadInfo:
    width = sum(lay.body[i].pooled_width for i in (taps or [cut]))
    h, k = plan.head.hidden, plan.head.num_classes
    if h:
        return HeadInfo(width * h + h + h * k + k, 2 * (width * h + h * k), width)
    return HeadInfo(width * k + k, 2 * width * k, width)


def phase_plan(plan: Plan, phase: str) -> Plan:
    """The plan a training phase trains by: the plan itself, only the head, or every kept layer."""
    if phase == "plan":
        return plan
    if phase == "head":
        return replace(plan, layers={}, default=FROZEN)
    if phase == "all":
        return replace(plan, layers={}, default=TRAIN)
    raise ValueError(f"phase: one of {', '.join(PHASES)}, got {phase!r}")


def layer_states(plan: Plan, lay: Layout | None = None) -> PlanStates:
    """Every body layer's state under ``plan``, and exactly which parameters train."""
    lay = layout(plan.model) if lay is None else lay
    cut, taps = validate(plan, lay)
    tap_set = set(taps)
    bn_policy_trains = plan.bn == "train"
    trainable_names: set[str] = set()
    states = []
    for i, layer in enumerate(lay.body):
        chosen = plan.choice_of(layer.name)
        if i > cut:
            states.append(LayerState(layer.name, i, REMOVED_S, chosen, False, False, False,
                                     plan.has_finer_entries(layer.name), layer.n_params, 0, layer.flops))
            continue
        trainable = 0
        bn_only = 0  # trains only because of the BatchNorm policy
        for p in layer.params:
            choice = plan.choice_of(p.name)
            if choice == TRAIN or (p.is_bn and bn_policy_trains):
                trainable_names.add(p.name)
                trainable += p.numel
                if choice != TRAIN:
                    bn_only += p.numel
        finer = plan.has_finer_entries(layer.name)
        partial = finer and any(plan.choice_of(p.name) != chosen for p in layer.params)
        states.append(LayerState(
            layer.name, i, TRAINS_S if chosen == TRAIN else FROZEN_S, chosen, i in tap_set,
            bn_only > 0, plan.bn == "eval" and any(p.is_bn for p in layer.params), partial, layer.n_params, trainable, layer.flops,
        ))
    return PlanStates(plan, tuple(states), cut, tuple(taps), frozenset(trainable_names),
                      head_info(plan, lay, cut, taps))


def plan_summary(plan: Plan) -> str:
    """One line: e.g. "frozen 17/18, cut after blocks.14, taps 3, head 2xFC (hidden 256)"."""
    try:
        st = layer_states(plan)
    except PlanError as exc:
        return f"invalid plan: {exc}"
    # Layers without parameters (pooling) have nothing to freeze; they are not counted.
    with_params = [s for s in st.kept if s.params > 0]
    n_frozen = sum(s.state == FROZEN_S for s in with_params)
    parts = [f"frozen {n_frozen}/{len(with_params)}"]
    taps = st.taps
    if st.cut < len(st.layers) - 1:
        parts.append(f"cut after {st.layers[st.cut].name}")
    if taps:
        parts.append(f"taps {len(taps)}")
    h = plan.head
    parts.append(f"head {h.fc_layers}xFC" + (f" (hidden {h.hidden})" if h.hidden else ""))
    if plan.bn == "train":
        parts.append("BN trains")
    elif plan.bn == "eval":
        parts.append("BN eval")
    if plan.head_warmup_epochs:
        parts.append(f"head warm-up {plan.head_warmup_epochs}")
    if plan.unfreeze_all_at is not None:
        parts.append(f"unfreeze all at epoch {plan.unfreeze_all_at}")
    return ", ".join(parts)
