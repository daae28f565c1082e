"""Heads fitted to convergence on frozen features, instead of trained for epochs.

When nothing in the body trains and no augmentation passes through it, the
head's inputs are fixed features and the head is a (nearly) convex problem:
it is solved by full-batch L-BFGS, its L2 strength chosen by cross-validation
on the training split (:mod:`tl_studio.probe`), the linear-probe protocol of
CLIP-style evaluations. A few hundred SGD steps with label smoothing and
dropout underfit the same features.

When body layers do train, the head starts from such a fit on the pretrained
features (linear probe, then fine-tune): a random head's large gradients
would otherwise disturb the pretrained layers first.

Both read the frozen network's pooled features from one pass over the data
(:mod:`tl_studio.features`), reused from the evidence pass when it ran.
Past the small-data bound the starting head is fitted on the evidence's
stratified sample of the training images (:mod:`tl_studio.features.sample`):
the head the evidence chose, with no pass over every image (the epochs run
the network over them anyway).
"""

from __future__ import annotations

import logging
import time

import torch
from torch import nn

from ..features import FeatureSet, FeatureStore, evidence_rows, feature_key, features_for, sample_fingerprint
from ..features.heads import head_on
from ..probe import fit_head as probe_fit_head
from ..probe import single_threaded
from ..progress import EXTRACTING, Meter, fold_ticks
from ..states import layer_states
from . import distributed

log = logging.getLogger(__name__)

SOLVER = "lbfgs"


def applies(plan, cfg) -> bool:
    """Whether the run is a head on fixed features: nothing in the body ever trains, nothing random passes it."""
    if cfg.head_solver != "auto" or cfg.augment != "none" or plan.unfreeze_all_at is not None:
        return False
    return not layer_states(plan).trainable_names


def lp_init_applies(plan, cfg) -> bool:
    """Whether an epoch run starts from a head fitted on the pretrained features: whenever the head solver
    is "auto" and epochs run anyway (body layers train, or augmentation passes the frozen ones). A random
    head on raw, unstandardised features is where the epochs would otherwise have to start."""
    return cfg.head_solver == "auto" and not applies(plan, cfg)


def feature_set(data, model_name: str, *, pretrained: bool, device, publish, check_stop, share=None,
                rows: list[int] | None = None) -> FeatureSet:
    """The data's feature set (of the images ``rows`` only, when given): the one handed over (from the
    evidence pass), else from the store or one pass."""
    fs = getattr(data, "features", None)
    fingerprint = data.info.get("fingerprint", "")
    key = feature_key(model_name, fingerprint if rows is None else sample_fingerprint(fingerprint, rows),
                      pretrained=pretrained)
    if fs is not None and fs.key == key and fs.rows == (len(data.labels) if rows is None else len(rows)):
        return fs
    store = getattr(data, "feature_store", None) or FeatureStore()
    known = None
    sample = evidence_rows(data.labels, data.train_idx) if rows is None else None
    if sample is not None:  # the evidence passed a sample of the training images: pass the others only
        skey = feature_key(model_name, sample_fingerprint(fingerprint, sample), pretrained=pretrained)
        found = fs if fs is not None and fs.key == skey else store.get(skey)
        if found is not None and found.rows == len(sample):
            known = (sample, found)
    return features_for(model_name, data.images, fingerprint, store=store, device=device, pretrained=pretrained,
                        publish=publish, check_stop=check_stop, share=share, rows=rows, known=known)


def head_layers(model) -> list[str]:
    """The body layers whose pooled outputs the head reads, in the order it concatenates them."""
    return [model.layer_names[i] for i in (model.taps or [len(model.layer_names) - 1])]


def head_inputs(trainer) -> tuple[torch.Tensor, FeatureSet | None]:
    """What the head reads for every image, (N, D) float32 on the CPU, and the feature set it came from.

    With the registry's pretrained weights: from the one pass of the pretrained
    network (the evidence pass's, the cache's, or a new one). With random
    weights (tests, ``--random-weights``) or a local weights file: from the
    trainer's own model, whose body no stored pass shares.
    """
    model = trainer.model
    if trainer.pretrained is True:  # the registry's weights: what the stored passes are of
        fs = feature_set(trainer.data, trainer.plan.model, pretrained=True, device=trainer.device,
                         publish=trainer.metrics.publish, check_stop=trainer.check_stop,
                         share=distributed.feature_share(trainer.dist))
        return fs.x(head_layers(model)), fs
    was = model.training
    model.eval()
    rows = torch.arange(len(trainer.data.labels))
    d = trainer.dist if trainer.dist is not None and len(rows) >= trainer.dist.world_size else None
    out = []
    mine = distributed.split_rows(rows, d)  # under torchrun: a shard
    meter = Meter(EXTRACTING, len(mine), "images", trainer.metrics.publish)
    meter.update(0)
    done = 0
    with torch.no_grad():
        for idx, raw in trainer.inputs.batches(mine, 64):
            trainer.check_stop()
            h, _ = model.prefix(trainer.inputs.tensor(idx, train=False, raw=raw), len(model.body))
            out.append(h.float().cpu())
            done += len(idx)
            meter.update(done)
    model.train(was)
    return distributed.gather_split(d, torch.cat(out), rows), None


def fit_head(trainer, x: torch.Tensor | None, fs: FeatureSet | None, rows: list[int] | None = None) -> dict:
    """Fit the model's head on the training rows of ``x`` (or of ``fs``); load it; return what the summary
    records. ``rows``: ``fs`` is of these training images only (the evidence's sample), all of them used."""
    started = time.perf_counter()
    model, data, seed = trainer.model, trainer.data, trainer.cfg.seed
    layers = head_layers(model)
    hidden, k = model.plan.head.hidden, model.plan.head.num_classes
    tick = fold_ticks(trainer.metrics.publish, trainer.check_stop)
    labels = torch.as_tensor(data.labels)
    if fs is not None:  # remembered: the evidence pass fitted this very head already
        fit_rows, fit_labels = ((list(data.train_idx), labels) if rows is None
                                else (list(range(len(rows))), labels[torch.as_tensor(rows)]))
        choice = head_on(fs, layers, fit_rows, fit_labels, k, hidden=hidden, seed=seed, tick=tick)
    else:
        fit_rows = torch.as_tensor(list(data.train_idx))
        with single_threaded():
            choice = probe_fit_head(x[fit_rows], labels[fit_rows], k, hidden=hidden, seed=seed, tick=tick)
    device = next(model.head.parameters()).device
    model.head.load_state_dict({k: v.to(device) for k, v in choice.state_dict.items()})
    return {"solver": SOLVER, "l2": choice.l2, "head_cv_accuracy": choice.cv_accuracy, "head_cv_se": choice.cv_se,
            "head_reason": choice.reason, "head_rows": len(fit_rows),
            "head_seconds": round(time.perf_counter() - started, 3)}


def fit_first(trainer) -> dict:
    """Linear probe, then fine-tune: the head starts fitted to the pretrained features.

    Past the small-data bound, on the evidence's sample of the training images (features/sample.py):
    the epochs run the network over every image anyway, so a frozen pass over all of them would only
    refine a starting point.
    """
    data = trainer.data
    rows = evidence_rows(data.labels, data.train_idx) if trainer.pretrained is True else None
    if rows is None:
        info = fit_head(trainer, *head_inputs(trainer))
    else:
        fs = feature_set(data, trainer.plan.model, pretrained=True, device=trainer.device,
                         publish=trainer.metrics.publish, check_stop=trainer.check_stop,
                         share=distributed.feature_share(trainer.dist), rows=rows)
        info = fit_head(trainer, None, fs, rows)
    log.info("the head starts fitted to the frozen features of %d training images (%s, l2 %.3g), then the body "
             "trains", info["head_rows"], info["head_reason"], info["l2"])
    return info


@torch.no_grad()
def score(model, x: torch.Tensor, rows: list[int], labels: torch.Tensor) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of the model's head on the head inputs ``x`` of ``rows``."""
    if not rows:
        return float("nan"), float("nan")
    head = model.head
    was = head.training
    head.eval()
    device = next(head.parameters()).device
    idx = torch.as_tensor(rows)
    x = x.index_select(0, idx).to(device)
    y = torch.as_tensor(labels)[idx].to(device)
    logits = head(x).float()
    head.train(was)
    return float(nn.functional.cross_entropy(logits, y)), float((logits.argmax(1) == y).float().mean())
