"""The recommender: dataset size x similarity x model -> a complete layer plan.

Pure Python over the cached layer table: no weights are loaded, no GPU is
needed. The rules and their thresholds live in :mod:`.rules`; this module
turns the depth fractions they give into layer names for one model, picks
the hyper-parameters and estimates the time; :mod:`.rationale` writes the
explanation.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

from .. import devices
from ..layout import layout
from ..plan import FROZEN, TRAIN, HeadSpec, Plan
from ..registry import get_spec
from . import rules, timing
from .evidence import Evidence
from .rationale import _rationale

log = logging.getLogger(__name__)

CASES: dict[str, str] = {
    "small_similar": "small and similar: new FC head, everything else frozen, no cut",
    "small_different": "small and different: cut most layers from the end, keep the low-level "
    "layers frozen, add new layers; optionally train the whole network afterwards",
    "large_similar": "large and similar: new last layer, train the whole network",
    "large_different": "large and different: new last layer, nothing frozen",
}

# ---- hyper-parameters (AdamW, the engine's default optimiser) ------------------------
LR_HEAD = 1e-3  # a fresh linear head on frozen features tolerates a high rate
LR_FINETUNE = 5e-4  # head and last body layer when body layers train; earlier ones lower
# Lowest body layer's learning rate as a share of LR_FINETUNE (discriminative
# rates, as in ULMFiT / fastai): similar data should barely move the early
# layers; different data needs them to adapt more.
BODY_LR_RATIO_SIMILAR = 0.1
BODY_LR_RATIO_DIFFERENT = 0.3
# Epochs fall log-linearly with data: few images need many passes, and with a
# frozen, cached body an epoch costs almost nothing.
EPOCHS_SMALL = 20
EPOCHS_LARGE = 8
# The optional "sometimes it pays" stage after a cut: the whole kept network,
# at the lower body rates, for a few epochs.
SECOND_STAGE_EPOCHS = 5
# Train only the new head for a while before body layers join (LP-FT, Kumar et
# al. 2022): a random head's large gradients would otherwise damage pretrained features.
HEAD_WARMUP_SMALL = 2
HEAD_WARMUP_LARGE = 1
BATCH_SIZE = 32
MIN_BATCHES_PER_EPOCH = 4  # smaller batches for tiny datasets, so an epoch is several steps


@dataclass
class Recommendation:
    case: str
    plan: Plan
    similarity: float
    images_per_class: float
    num_classes: int
    lr: float
    epochs: int
    batch_size: int
    augment: str  # "none" | "light" | "strong"
    use_cache: bool  # a frozen prefix exists and no augmentation passes through it
    estimated_seconds: float  # an estimate: see timing.py for what it leaves out
    rationale: str
    freeze_fraction: float  # share of the body's forward FLOPs that is frozen, 0..1
    keep_fraction: float  # share of the body's forward FLOPs that is kept (1: no cut)
    device: str = "cpu"
    # The evidence measured on the data, when the plan's cut, taps and head come from it.
    evidence: "Evidence | None" = field(default=None, repr=False)

    @property
    def fitted_head(self) -> bool:
        """Whether training this plan fits the head to convergence (nothing in the body ever trains and
        no augmentation passes it) rather than running epochs (with the default ``head_solver``)."""
        from ..states import layer_states

        return (self.augment == "none" and self.plan.unfreeze_all_at is None
                and not layer_states(self.plan).trainable_names)

    @property
    def basis(self) -> str:
        """"evidence" (measured on the training split) or "prior" (the four cases alone)."""
        return "evidence" if self.evidence is not None else "prior"

    def to_dict(self) -> dict:
        out = {
            "case": self.case,
            "plan": self.plan.to_dict(),
            "similarity": self.similarity,
            "images_per_class": self.images_per_class,
            "num_classes": self.num_classes,
            "lr": self.lr,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "augment": self.augment,
            "use_cache": self.use_cache,
            "estimated_seconds": self.estimated_seconds,
            "device": self.device,
            "freeze_fraction": self.freeze_fraction,
            "keep_fraction": self.keep_fraction,
            "rationale": self.rationale,
            "basis": self.basis,
        }
        if self.evidence is not None:
            out["evidence"] = self.evidence.to_dict()
        return out


@dataclass(frozen=True)
class _Body:
    """A model's body layers with their depth fractions, from the layer table."""

    names: tuple[str, ...]
    ends: tuple[float, ...]  # share of body forward FLOPs done after each layer

    def upto(self, fraction: float) -> int:
        """Index of the last layer ending at or before ``fraction`` (-1: none)."""
        idx = -1
        for i, e in enumerate(self.ends):
            if e <= fraction + 1e-9:
                idx = i
        return idx


def _body(model_name: str) -> _Body:
    lay = layout(model_name)
    return _Body(lay.names, lay.ends)


def _width(model_name: str, name: str) -> int:
    return layout(model_name).layer(name).pooled_width


def _check_inputs(model_name, images_per_class, similarity, num_classes):
    try:
        get_spec(model_name)
    except KeyError as exc:
        raise ValueError(f"model: {exc.args[0]}") from None
    if isinstance(images_per_class, bool) or not isinstance(images_per_class, (int, float)):
        raise ValueError(f"images_per_class: must be a number, got {images_per_class!r}")
    if not math.isfinite(images_per_class) or images_per_class <= 0:
        raise ValueError(f"images_per_class: must be a positive number, got {images_per_class!r}")
    if isinstance(similarity, bool) or not isinstance(similarity, (int, float)):
        raise ValueError(f"similarity: must be a number in [0, 1], got {similarity!r}")
    if not (0.0 <= similarity <= 1.0):
        raise ValueError(f"similarity: must be in [0, 1] (0 unrelated to ImageNet, 1 the same kind), got {similarity!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes: must be an integer of at least 2, got {num_classes!r}")


def _rule_taps(body: _Body, cut: int) -> list[int]:
    """The last kept layer plus earlier ones at fixed shares of the kept depth (no evidence)."""
    taps = {cut}
    for share in rules.TAP_POSITIONS:
        i = body.upto(body.ends[cut] * share)
        if i >= 0:
            taps.add(i)
    return sorted(taps)


def recommend(
    model_name: str,
    images_per_class: float,
    similarity: float,
    num_classes: int,
    *,
    device: str | None = None,
    evidence: Evidence | None = None,
    second_stage: bool = False,
) -> Recommendation:
    """Which of the four cases applies, and a complete plan for it.

    ``images_per_class``: training images per class; ``similarity``: 0
    (unrelated to ImageNet) .. 1 (the same kind of images), from a slider or
    measured. ``evidence`` (:func:`.evidence.gather_evidence`, measured on the
    training split): the cut, the taps and the head's width come from it; the
    four cases then decide only how much of what is kept trains, and the
    schedule. Without it, the four cases decide everything (the prior).
    ``second_stage``: for small and different data, append the optional
    stage ("sometimes it pays to then train the whole network"). It is off by
    default: it multiplies the cost of a cached head-only run many times over
    on a CPU, and the rationale offers it.
    """
    _check_inputs(model_name, images_per_class, similarity, num_classes)
    if evidence is not None and evidence.model != model_name:
        raise ValueError(f"evidence: measured with {evidence.model}, not {model_name}")
    body = _body(model_name)
    n, s = float(images_per_class), float(similarity)
    case = rules.case_of(n, s)
    small = case.startswith("small")
    keep, freeze = rules.keep_depth(n, s), rules.freeze_depth(n, s)
    all_frozen = freeze >= keep - 1e-9
    last = len(body.names) - 1

    if evidence is not None:
        index = {name: i for i, name in enumerate(body.names)}
        cut = last if evidence.keep_all else index[evidence.cut]
        taps = sorted(index[t] for t in evidence.taps)
        hidden = evidence.head_hidden
    else:
        cut = last if keep >= 1.0 - 1e-9 else max(body.upto(keep), 0)
        taps = _rule_taps(body, cut) if rules.wants_taps(n, s) else []
        hidden = rules.HIDDEN_UNITS if (small and cut < last) else 0
    keep_frac = body.ends[cut] if cut < last else 1.0
    frozen_upto = cut if all_frozen else body.upto(min(freeze, keep_frac))

    second_stage_offered = small and cut < last
    second_stage = second_stage and second_stage_offered
    stage1 = round(EPOCHS_SMALL + (EPOCHS_LARGE - EPOCHS_SMALL) * rules.data_score(n))
    epochs = stage1 + (SECOND_STAGE_EPOCHS if second_stage else 0)
    body_trains = frozen_upto < cut
    ratio = BODY_LR_RATIO_SIMILAR + (BODY_LR_RATIO_DIFFERENT - BODY_LR_RATIO_SIMILAR) * (1.0 - s)

    names = list(body.names)
    kw = dict(
        head=HeadSpec(num_classes, hidden=hidden, dropout=rules.HEAD_DROPOUT),
        cut_after=names[cut] if cut < last else None,
        taps=[names[i] for i in taps],
        body_lr_ratio=round(ratio, 3) if (body_trains or second_stage) else 1.0,
        head_warmup_epochs=(HEAD_WARMUP_SMALL if small else HEAD_WARMUP_LARGE) if body_trains else 0,
        unfreeze_all_at=stage1 if second_stage else None,
    )
    if frozen_upto >= cut:
        plan = Plan(model=model_name, default=FROZEN, **kw)
    elif frozen_upto < 0:
        plan = Plan(model=model_name, default=TRAIN, **kw)
    else:
        layers = {nm: (FROZEN if i <= frozen_upto else TRAIN) for i, nm in enumerate(names[: cut + 1])}
        plan = Plan(model=model_name, layers=layers, default=TRAIN, **kw)

    augment = "none" if not body_trains else ("strong" if small else "light")
    use_cache = frozen_upto >= 0 and augment == "none"
    total = n * num_classes
    batch = BATCH_SIZE
    while batch > 8 and total < batch * MIN_BATCHES_PER_EPOCH:
        batch //= 2

    feat_dim = sum(_width(model_name, names[i]) for i in taps) if taps else _width(model_name, names[cut])
    head_flops = 2.0 * (feat_dim * hidden + hidden * num_classes if hidden else feat_dim * num_classes)
    dev = str(devices.resolve(device))
    seconds = timing.training_cost(
        timing.layer_seconds(model_name, dev),
        frozen_upto + 1,
        cut + 1,
        head_flops / timing.device_flops_per_second(dev),
        total,
        epochs,
        cached=use_cache,
        unfreeze_all_at=plan.unfreeze_all_at,
    )
    freeze_frac = body.ends[frozen_upto] if frozen_upto >= 0 else 0.0
    if frozen_upto >= cut:
        freeze_frac = keep_frac

    rec = Recommendation(
        case=case,
        plan=plan,
        similarity=s,
        images_per_class=n,
        num_classes=num_classes,
        lr=LR_FINETUNE if body_trains else LR_HEAD,
        epochs=epochs,
        batch_size=batch,
        augment=augment,
        use_cache=use_cache,
        estimated_seconds=float(f"{seconds:.2g}"),  # two significant digits: tiny runs are not 0
        rationale="",
        freeze_fraction=round(freeze_frac, 4),
        keep_fraction=round(keep_frac, 4),
        device=dev,
        evidence=evidence,
    )
    rec.rationale = _rationale(rec, names, cut, frozen_upto, taps, stage1)
    return rec
