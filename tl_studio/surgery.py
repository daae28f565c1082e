"""Applying a layer plan: freeze, train, cut, tap and attach a new head.

:class:`TransferModel` runs the kept body stages in order, pools what the head
needs, and classifies. Two properties matter for training:

* Frozen parts run in inference mode even while the model is in ``train()``:
  BatchNorm statistics never move, dropout and stochastic depth are off. A
  frozen prefix is therefore a deterministic function of its input, which is
  what lets the feature cache store its output once.
* Under the plan's ``bn`` "eval" every BatchNorm, in trained layers too,
  runs in inference mode: its statistics stay fixed (torchvision's
  FrozenBatchNorm2d), while its affine weights train where the layer trains.
* The leading run of frozen stages (the *frozen prefix*) runs under
  ``torch.no_grad()``: no activations are kept for backward there, which is
  where freezing saves compute (ideally 3 / (3 - 2f) for a prefix holding a
  fraction f of the forward FLOPs).
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import torch
from torch import nn

from .layout import layout, pooled_width
from .plan import Plan, PlanError
from .registry import get_spec
from .stages import GlobalPool
from .states import layer_states, phase_plan, validate

log = logging.getLogger(__name__)

_BN = (nn.modules.batchnorm._BatchNorm,)


def build_head(in_features: int, num_classes: int, hidden: int, dropout: float) -> nn.Sequential:
    if hidden:
        layers = OrderedDict(
            fc1=nn.Linear(in_features, hidden),
            act=nn.ReLU(inplace=True),
            drop=nn.Dropout(dropout),
            fc=nn.Linear(hidden, num_classes),
        )
    else:
        layers = OrderedDict(drop=nn.Dropout(dropout), fc=nn.Linear(in_features, num_classes))
    return nn.Sequential(layers)


def _pooled_width(shape: str) -> int:
    """Feature width after GlobalPool of a layer-table output shape like '112x14x14'."""
    return pooled_width(tuple(int(d) for d in shape.split("x")))


def body_layer_names(model_name: str) -> list[str]:
    return list(layout(model_name).names)


class TransferModel(nn.Module):
    """A pretrained body (possibly cut), optional taps, and a new head."""

    def __init__(self, plan: Plan, base: nn.Module, class_names: list[str] | None = None):
        super().__init__()
        self.layout = layout(plan.model)
        cut, taps = validate(plan, self.layout)
        spec = get_spec(plan.model)
        stage_list = [s for s in spec.stages(base) if s.role == "body"][: cut + 1]
        self.plan = plan
        self.model_name = plan.model
        self.layer_names = [s.name for s in stage_list]
        self.body = nn.ModuleList([s.module for s in stage_list])
        self.taps = taps
        self._tap_set = frozenset(taps)
        self.pool = GlobalPool.for_model(base)
        self.feature_dim = self.layout.width([self.layer_names[i] for i in (taps or [cut])])
        h = plan.head
        self.head = build_head(self.feature_dim, h.num_classes, h.hidden, h.dropout)
        n = h.num_classes
        self.class_names = list(class_names) if class_names else [f"class_{i}" for i in range(n)]
        if len(self.class_names) != n:
            raise PlanError(f"head.num_classes is {n} but {len(self.class_names)} class names were given")
        self.apply_plan()

    # ---- freezing ---------------------------------------------------------------
    def named_body_parameters(self):
        """(full name, parameter, is_batchnorm) for every body parameter."""
        for name, stage in zip(self.layer_names, self.body):
            for mod_name, mod in stage.named_modules(prefix=name):
                is_bn = isinstance(mod, _BN)
                for p_name, p in mod.named_parameters(prefix=mod_name, recurse=False):
                    yield p_name, p, is_bn

    def apply_plan(self, phase: str = "plan") -> None:
        """Set requires_grad for a training phase, as :func:`tl_studio.states.layer_states` decides.

        ``phase``: "plan" (as the plan says), "head" (head only: the linear
        probe) or "all" (every kept layer trains).
        """
        trains = layer_states(phase_plan(self.plan, phase), self.layout).trainable_names
        for name, p, _ in self.named_body_parameters():
            p.requires_grad_(name in trains)
        for p in self.head.parameters():
            p.requires_grad_(True)
        self.train(self.training)

    def frozen_prefix(self) -> int:
        """Number of leading body stages with nothing to train."""
        for i, stage in enumerate(self.body):
            if any(p.requires_grad for p in stage.parameters()):
                return i
        return len(self.body)

    def train(self, mode: bool = True):
        super().train(mode)
        if mode:
            for stage in self.body:
                _eval_frozen(stage)
                if self.plan.bn == "eval":
                    for m in stage.modules():
                        if isinstance(m, _BN):
                            m.eval()
        self._prefix = self.frozen_prefix()
        return self

    # ---- forward ----------------------------------------------------------------
    def _run(self, x, start: int, stop: int, feats: list, stages=None):
        stages = self.body if stages is None else stages
        for i in range(start, stop):
            x = stages[i](x)
            if i in self._tap_set:
                feats.append(self.pool(x))
        return x

    def _head_input(self, x, feats):
        return torch.cat(feats, dim=1) if self.taps else self.pool(x)

    def prefix(self, x, k: int | None = None, stages=None):
        """Run the first k stages (default: the frozen prefix) without autograd.

        Returns what :meth:`suffix` needs: the activation at the boundary and the
        pooled taps so far. When the whole body is frozen, the activation is the
        head's input itself (pooled), which is what the feature cache stores.
        ``stages`` may stand in for the first k body stages (an optimised
        inference copy of them, features/fold.py).
        """
        k = self._prefix if k is None else k
        feats: list = []
        with torch.no_grad():
            x = self._run(x, 0, k, feats, stages)
            if k == len(self.body):
                return self._head_input(x, feats), []
        return x, feats

    def suffix(self, x, feats, k: int | None = None):
        k = self._prefix if k is None else k
        if k == len(self.body):
            return self.head(x)
        feats = list(feats)
        x = self._run(x, k, len(self.body), feats)
        return self.head(self._head_input(x, feats))

    def features(self, x):
        """The head's input: pooled (and concatenated tapped) features."""
        feats: list = []
        x = self._run(x, 0, len(self.body), feats)
        return self._head_input(x, feats)

    def forward(self, x):
        if self.training and torch.is_grad_enabled() and self._prefix:
            return self.suffix(*self.prefix(x))
        return self.head(self.features(x))

    # ---- optimisation ------------------------------------------------------------
    def param_groups(self, lr: float, weight_decay: float = 0.0, body_lr_ratio: float | None = None):
        """Optimizer parameter groups for the currently trainable parameters.

        The earliest trainable body stage learns at ``lr * body_lr_ratio``,
        rising geometrically stage by stage to ``lr`` for the head (discriminative
        learning rates, as in ULMFiT / fastai). Biases and norm weights get no
        weight decay.
        """
        ratio = self.plan.body_lr_ratio if body_lr_ratio is None else body_lr_ratio
        trainable = [i for i, s in enumerate(self.body) if any(p.requires_grad for p in s.parameters())]
        n = len(trainable)
        groups: dict[tuple[float, float], dict] = {}

        def add(params, group_lr, label):
            for p in params:
                if not p.requires_grad:
                    continue
                wd = 0.0 if p.ndim <= 1 else weight_decay
                g = groups.setdefault(
                    (group_lr, wd), {"params": [], "lr": group_lr, "weight_decay": wd, "layers": []}
                )
                g["params"].append(p)
                if label not in g["layers"]:
                    g["layers"].append(label)

        for k, i in enumerate(trainable):
            add(self.body[i].parameters(), lr * ratio ** ((n - k) / n), self.layer_names[i])
        add(self.head.parameters(), lr, "head")
        return list(groups.values())

    def parameter_counts(self) -> dict[str, int]:
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        total = sum(p.numel() for p in self.parameters())
        return {"trainable": trainable, "frozen": total - trainable, "total": total}


def _eval_frozen(module: nn.Module) -> None:
    """Put every part of ``module`` that has nothing to train into eval mode."""
    params = list(module.parameters())
    if not any(p.requires_grad for p in params):
        module.eval()
        return
    for child in module.children():
        if any(True for _ in child.parameters()):
            _eval_frozen(child)


def build_model(
    plan: Plan, pretrained: bool = True, class_names: list[str] | None = None
) -> TransferModel:
    """Build the model a plan describes, from pretrained (or, if asked, random) weights."""
    validate(plan)
    base = get_spec(plan.model).build(pretrained=pretrained)
    return TransferModel(plan, base, class_names)
