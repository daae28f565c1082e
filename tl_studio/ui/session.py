"""What one browser workspace is editing, as a typed value, and the moves that change it.

The UI's handlers are thin: each reads the workspace's :class:`Session`,
calls one of the functions below (plain functions of a session, returning a
new one), stores the result and renders it. Nothing here imports gradio, so
every move is tested without a browser.

A session is frozen, like the plan inside it: a running job holds the plan
and the settings it was started with, and loading other data or editing the
checklist afterwards builds new values instead of changing the job's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

from ..plan import Plan
from ..registry import DEFAULT_MODEL
from ..train.config import TrainConfig

log = logging.getLogger(__name__)

PRIOR, EVIDENCE = "prior", "evidence"
DEFAULT_IMAGES_PER_CLASS = 40.0
DEFAULT_SIMILARITY = 0.5


@dataclass(frozen=True)
class StrategyInputs:
    """The strategy tab's sliders."""

    images_per_class: float = DEFAULT_IMAGES_PER_CLASS
    similarity: float = DEFAULT_SIMILARITY
    second_stage: bool = False


def evidence_matches(ev, model: str, dataset) -> bool:
    """Whether evidence (a :class:`tl_studio.strategy.Evidence`) was measured on this data's training split."""
    return (ev is not None and dataset is not None and ev.model == model and ev.fingerprint == dataset.fingerprint
            and ev.training_images == len(dataset.train_idx))


@dataclass(frozen=True)
class Session:
    plan: Plan = field(default_factory=lambda: Plan.head_only(DEFAULT_MODEL, 2))
    dataset: Any = None  # tl_studio.data.Dataset
    evidence: Any = None  # tl_studio.strategy.Evidence: measured on the loaded data with one model
    strategy: StrategyInputs = StrategyInputs()
    # The recommendation the strategy tab shows: Apply applies exactly this one.
    recommendation: Any = field(default=None, compare=False)  # tl_studio.strategy.Recommendation
    source: str = PRIOR  # where the shown recommendation comes from: the four cases, or the evidence
    settings: TrainConfig = TrainConfig()
    run: str | None = None  # the run picked in Evaluate / Predict / Export
    job_id: str | None = None

    @property
    def model(self) -> str:
        return self.plan.model

    @property
    def num_classes(self) -> int:
        return len(self.dataset.classes) if self.dataset is not None else self.plan.head.num_classes

    @property
    def dataset_images_per_class(self) -> float | None:
        ds = self.dataset
        if ds is None or not ds.classes:
            return None
        return len(ds.train_idx) / len(ds.classes)

    @property
    def matching_evidence(self):
        """The evidence, while it was measured on the loaded data with the current model."""
        return self.evidence if evidence_matches(self.evidence, self.model, self.dataset) else None


# ---- moves -----------------------------------------------------------------------------
def with_dataset(s: Session, dataset) -> Session:
    """New data: the head follows its classes, the sliders its size; old evidence stays only if it matches."""
    k = len(dataset.classes)
    plan = s.plan.with_classes(k) if k >= 2 else s.plan
    ipc = len(dataset.train_idx) / max(k, 1)
    out = replace(s, dataset=dataset, plan=plan, strategy=replace(s.strategy, images_per_class=ipc))
    if out.matching_evidence is None:
        out = replace(out, source=PRIOR)
        if s.evidence is not None:
            log.info("new data: the evidence measured on the previous data is set aside")
    return recommend_now(out)


def with_model(s: Session, model: str) -> Session:
    """Another network: a head-only plan for it (a plan names one model's layers)."""
    if model == s.model:
        return s
    out = replace(s, plan=Plan.head_only(model, s.num_classes if s.num_classes >= 2 else 2))
    if out.matching_evidence is None:
        out = replace(out, source=PRIOR)
    return recommend_now(out)


def with_plan(s: Session, plan: Plan) -> Session:
    if plan.model != s.model:
        s = with_model(s, plan.model)
    return replace(s, plan=plan.with_classes(s.num_classes) if s.num_classes >= 2 else plan)


def with_strategy(s: Session, images_per_class: float, similarity: float, second_stage: bool) -> Session:
    """The user moved a slider: the four cases decide; measured evidence is set aside (and said so)."""
    inputs = StrategyInputs(float(images_per_class), float(similarity), bool(second_stage))
    if inputs == s.strategy and s.recommendation is not None:
        return s
    source = PRIOR
    if s.source == EVIDENCE and (inputs.images_per_class, inputs.similarity) == (
        s.strategy.images_per_class, s.strategy.similarity
    ):
        source = EVIDENCE  # only the second-stage box changed
    return recommend_now(replace(s, strategy=inputs, source=source))


def with_evidence(s: Session, evidence) -> Session:
    """Measured on the loaded data: the sliders show what was measured, the evidence decides."""
    if not evidence_matches(evidence, s.model, s.dataset):
        log.info("evidence for other data or another model: set aside")
        return s
    strategy = replace(s.strategy, images_per_class=s.dataset_images_per_class,
                       similarity=round(float(evidence.similarity.similarity), 2))
    return recommend_now(replace(s, evidence=evidence, strategy=strategy, source=EVIDENCE))


def recommend_now(s: Session) -> Session:
    """The recommendation for the session as it stands (what the strategy tab shows)."""
    from ..strategy import recommend

    ev = s.matching_evidence if s.source == EVIDENCE else None
    k = max(s.num_classes, 2)
    try:
        similarity = ev.similarity.similarity if ev is not None else s.strategy.similarity
        rec = recommend(s.model, s.strategy.images_per_class, similarity, k, evidence=ev,
                        second_stage=s.strategy.second_stage)
    except ValueError as exc:
        log.info("no recommendation: %s", exc)
        rec = None
    return replace(s, recommendation=rec, source=PRIOR if ev is None else EVIDENCE)


def apply_recommendation(s: Session) -> Session:
    """Apply exactly the recommendation on screen: its plan and its training settings."""
    rec = s.recommendation
    if rec is None:
        raise ValueError("Strategy: there is no recommendation to apply yet")
    settings = replace(s.settings, epochs=rec.epochs, lr=rec.lr, batch_size=rec.batch_size, augment=rec.augment)
    return replace(with_plan(s, rec.plan), settings=settings)


def with_settings(s: Session, settings: TrainConfig) -> Session:
    return replace(s, settings=settings)


def with_job(s: Session, job_id: str, settings: TrainConfig) -> Session:
    return replace(s, job_id=job_id, settings=settings)


def with_run(s: Session, run: str | None) -> Session:
    return replace(s, run=run)
