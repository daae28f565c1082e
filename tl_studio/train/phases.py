"""Which layers train when, and the optimizer groups that follow.

A run moves through up to three phases, by epoch:

* ``head``: only the new head trains (the plan's ``head_warmup_epochs``);
* ``plan``: what the plan says trains;
* ``all``: from the plan's ``unfreeze_all_at`` on, every kept layer trains,
  the body gently (its learning-rate ratio is at most 0.1).

Each layer's learning rate comes from ``TransferModel.param_groups``
(discriminative rates rising to the head's). Newly trainable layers join the
optimizer as new groups, keeping the state (Adam moments) of the others.
"""

from __future__ import annotations

import logging

import torch

from ..plan import Plan

log = logging.getLogger(__name__)

HEAD, PLAN, ALL = "head", "plan", "all"


def phase_for(plan: Plan, epoch: int) -> str:
    if plan.unfreeze_all_at is not None and epoch >= plan.unfreeze_all_at:
        return ALL
    if epoch < plan.head_warmup_epochs:
        return HEAD
    return PLAN


def enter(model, optimizer: torch.optim.Optimizer | None, phase: str, plan: Plan, cfg) -> torch.optim.Optimizer:
    """Set what trains in ``phase``; returns the optimizer (made on the first call) with its new groups.

    Forgetting to add newly unfrozen parameters to the optimizer is a
    classic bug (Lightning's BaseFinetuning); here they join at their
    discriminative learning rates, and the state of existing groups (Adam
    moments of the head) is kept.
    """
    model.apply_plan(phase)
    ratio = plan.body_lr_ratio
    if phase == ALL:
        ratio = min(ratio, 0.1)  # "sometimes it pays" to train all: gently
    groups = model.param_groups(cfg.lr, cfg.weight_decay, ratio)
    if optimizer is None:
        for g in groups:
            g["initial_lr"] = g["lr"]
        if cfg.optimizer == "sgd":
            optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
        else:
            optimizer = torch.optim.AdamW(groups, lr=cfg.lr)
    else:
        known = {id(p) for g in optimizer.param_groups for p in g["params"]}
        for g in groups:
            g["params"] = [p for p in g["params"] if id(p) not in known]
            if g["params"]:
                g["initial_lr"] = g["lr"]
                optimizer.add_param_group(g)
    log.info("phase %s: %s", phase, model.parameter_counts())
    return optimizer


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """Every group at ``factor`` times its own base rate (the schedule's step)."""
    for g in optimizer.param_groups:
        g["lr"] = g["initial_lr"] * factor


def head_group(optimizer: torch.optim.Optimizer) -> dict:
    """The parameter group of the new head: the rate a run logs is the head's.

    Not the group that joined last: after unfreezing, that is a body layer's,
    at a fraction of the head's rate.
    """
    return next(g for g in optimizer.param_groups if "head" in g.get("layers", ()))
