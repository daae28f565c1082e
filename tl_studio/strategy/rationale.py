"""The recommendation's rationale: why this case, this cut, this freeze, in a few short paragraphs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import rules

if TYPE_CHECKING:
    from .recommend import Recommendation


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


# Where the four cases come from; named in full where the app first cites them.
SOURCE = '"ML | Introduction to Transfer Learning" (GeeksforGeeks, 2021)'


def _rationale(rec: Recommendation, names: list[str], cut: int, frozen_upto: int, taps: list[int], stage1: int) -> str:
    """The explanation in short paragraphs: the evidence (when measured), the case, the plan, the schedule."""
    n, s, k = rec.images_per_class, rec.similarity, rec.num_classes
    last = len(names) - 1
    ev = rec.evidence
    size = "small" if rec.case.startswith("small") else "large"
    kind = "similar to" if rec.case.endswith("similar") else "different from"
    paragraphs = []
    if ev is not None:
        paragraphs.append(ev.words())
    case = [
        f"{n:g} images per class is {size} data (the line is {rules.CASE_SPLIT_DATA}), and similarity "
        f"{s:.2f} reads as {kind} ImageNet (the line is {rules.SIMILAR}).",
        f"The four cases of {SOURCE}, " + _CORNER_REASONS[rec.case].format(k=k),
    ]
    if ev is not None:
        case.append("Here the measured probe curve sets the cut, the taps and the head; the case decides how "
                    "much of what is kept trains, and the schedule.")
    elif rec.case == "small_different" and cut < last and rec.keep_fraction > rules.KEEP_DIFFERENT + 0.1:
        # Where this point lies between the corners, and what that changes.
        case.append(
            "Here the cut is milder than at the corner: "
            + (f"similarity {s:.2f} is above {rules.UNRELATED}, where high-level features are written off"
               if s > rules.UNRELATED else f"with {n:g} images per class later layers can be retrained")
            + "."
        )
    if rec.case == "small_similar" and frozen_upto < cut:
        case.append(
            f"Here, with more than {rules.SMALL_DATA} images per class, the later layers have enough "
            "data to adapt as well."
        )
    paragraphs.append(" ".join(case))

    plan = []
    if cut < last:
        plan.append(f"Kept: the body up to {names[cut]} ({_pct(rec.keep_fraction)} of its compute); the rest is cut.")
    if frozen_upto >= cut:
        plan.append("Every kept layer is frozen; only the new head trains.")
    else:
        if frozen_upto < 0:
            plan.append("Nothing is frozen.")
        else:
            why = (
                f"with fewer than {rules.LARGE_DATA} images per class the earliest, most generic layers "
                "are kept as they are"
            )
            plan.append(f"Frozen up to {names[frozen_upto]} ({_pct(rec.freeze_fraction)} of the compute): {why}.")
        plan.append(
            f"Trained body layers learn at {rec.plan.body_lr_ratio:g}x the head's rate at the earliest, "
            f"rising to the head's, after {rec.plan.head_warmup_epochs} head-only warm-up epoch(s)."
        )
    if ev is not None:
        plan.append(f"The head is {'two FC layers' if rec.plan.head.hidden else 'one FC layer'}: {ev.head_reason}.")
    elif rec.plan.head.hidden:
        plan.append(
            f"The new head has two FC layers ({rec.plan.head.hidden} hidden units) to combine the "
            "kept lower-level features."
        )
    if taps and ev is not None:
        best_single = max(p.accuracy for p in ev.curve)
        why = ("better than one layer alone by more than the noise (features from several layers)"
               if ev.taps_accuracy > best_single else
               "as well as one layer alone, with a lower held-out error: several layers probe perfectly on every "
               "fold, so their error decides")
        plan.append(
            f"It reads pooled features of {', '.join(names[i] for i in taps)}: together they probe at "
            f"{ev.taps_accuracy:.2f}, {why}."
        )
    elif taps:
        plan.append(
            "Similarity is middling, so the head also reads pooled features of earlier layers "
            f"({', '.join(names[i] for i in taps)}): features from several layers."
        )
    paragraphs.append(" ".join(plan))

    schedule = []
    if rec.plan.unfreeze_all_at is not None:
        schedule.append(
            f"Optional second stage: from epoch {stage1} every kept layer trains at lower rates "
            "(set unfreeze_all_at to null to skip it)."
        )
    elif rec.case == "small_different" and rec.plan.cut_after is not None:
        schedule.append(
            "Sometimes it pays to then train the whole kept network: ask for the optional second stage "
            "(it costs several times this run on a CPU)."
        )
    if frozen_upto >= cut and rec.plan.unfreeze_all_at is None:
        schedule.append("The frozen layers' outputs are computed once; the head is then fitted to convergence "
                        "(L2 strength by cross-validation on the training split), not trained for epochs.")
    elif rec.use_cache:
        schedule.append("The frozen layers' outputs are computed once and cached, so epochs are cheap.")
    when = "under a second" if rec.estimated_seconds < 1 else f"about {_duration(rec.estimated_seconds)}"
    schedule.append(f"Estimated training time on {rec.device}: {when} (FLOPs-based).")
    paragraphs.append(" ".join(schedule))
    return "\n\n".join(paragraphs)


_CORNER_REASONS = {
    "small_similar": "small and similar: fine-tuning the whole network on few images would overfit, so "
    "replace the last fully connected layer with a new one for {k} classes, freeze everything else "
    "and train only the new layer.",
    "large_similar": "large and similar: with plenty of data there is little risk of overfitting, so "
    "replace the last fully connected layer with one for {k} classes and train the whole network.",
    "small_different": "small and different: the pretrained high-level features do not help with "
    "different images, so remove most layers from the end, keep the low-level ones (edges, colours, "
    "textures), add new layers for the {k} classes; sometimes it pays to train the whole network afterwards.",
    "large_different": "large and different: replace the last layer with one for {k} classes and "
    "train the whole network with nothing frozen.",
}


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
