"""Measured similarity: how much the user's images look like the pretraining images.

Two separate questions, both answered by the pretrained network itself on
the user's images:

* **Domain similarity** (``similarity``, 0..1): do these look like ImageNet
  photos? Two signals, each mapped to 0..1 between anchors and averaged:

  - *the ImageNet head*: on photos of the kind it was trained on it is
    confident; on digits or texture patches it spreads its probability over
    many classes. Signal: the mean normalised entropy of its softmax.
  - *feature statistics*: every BatchNorm layer stores the mean and variance
    its input had over ImageNet. The per-channel KL divergence between the
    user's activation statistics and those stored ones says how unusual the
    images are for the network, layer by layer (the statistics DeepInversion
    matches). Models without BatchNorm (ConvNeXt, ViT) use the head alone;
    a backbone without an ImageNet head (DINOv2) uses the statistics alone;
    with neither, no similarity signal applies and it reads a neutral 0.5.
    ``signals_used`` says which applied.

* **Transferability** (``transferability``): LogME (You et al. 2021) of the
  frozen penultimate features against the user's labels: how well the frozen
  features separate *these* classes, whatever the images look like. Texture
  patches are far from ImageNet yet easy to separate; the two differ, and the
  UI shows both.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch

from .features import check_images, check_labels, imagenet_pass
from .logme import logme

log = logging.getLogger(__name__)

# Anchors of the two similarity signals, measured with EfficientNet-Lite0 on
# crops of scikit-image's photos (coffee, cat, astronaut, rocket: ImageNet
# kinds of objects), texture crops (brick, grass, gravel), upscaled handwritten
# digits, uniform noise and blank grey images (tests/test_strategy_measure.py
# builds the first three):
# normalised entropy of the ImageNet head's softmax (0: one class, 1: uniform).
ENTROPY_IMAGENET = 0.25  # the photos measure 0.36; ImageNet's own images sit lower still
ENTROPY_UNRELATED = 0.85  # textures 0.69, noise 0.70, digits 0.77, blank grey 1.0
# Mean per-channel KL (nats) between the images' BatchNorm-input statistics
# and the stored ImageNet ones, read on a log scale between these two.
BN_KL_IMAGENET = 0.03  # the photos measure 0.085; a sample of ImageNet itself would sit near 0
BN_KL_UNRELATED = 1.0  # textures 0.27, digits 0.50, noise 0.69, blank grey 1.4
# Enough images for stable statistics; more only costs time.
MAX_IMAGES = 256
# Reading of the result, for the explanation.
SIMILAR_ABOVE = 0.5


@dataclass
class SimilarityReport:
    similarity: float  # domain similarity to ImageNet, 0..1
    transferability: float  # LogME, nats per sample (higher: frozen features fit the labels better)
    transferability_normalised: float  # 0..1: share of label variance the frozen features explain
    signals: dict[str, float] = field(default_factory=dict)
    explanation: str = ""
    signals_used: tuple[str, ...] = ()  # which similarity signals applied to this model (HEAD, STATISTICS)

    def to_dict(self) -> dict:
        return {
            "similarity": self.similarity,
            "transferability": self.transferability,
            "transferability_normalised": self.transferability_normalised,
            "signals": dict(self.signals),
            "signals_used": list(self.signals_used),
            "explanation": self.explanation,
        }


HEAD, STATISTICS = "imagenet head", "batchnorm statistics"


def _has_imagenet_head(model_name: str, n_logits: int) -> bool:
    """Whether the network ends in its own ImageNet classifier (a backbone such as DINOv2 has none)."""
    from ..registry import get_spec

    spec = get_spec(model_name)
    if spec.hub is not None and spec.hub.imagenet_subset is None:
        return False
    return n_logits == len(spec.categories) and n_logits > 1


def _between(value: float, good: float, bad: float) -> float:
    """1 at ``good``, 0 at ``bad``, linear between, clipped."""
    return min(max((bad - value) / (bad - good), 0.0), 1.0)


def _subsample(n: int, labels: torch.Tensor) -> torch.Tensor:
    """Up to MAX_IMAGES indices, the same share from every class (deterministic)."""
    if n <= MAX_IMAGES:
        return torch.arange(n)
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(n, generator=g)
    # Round-robin over classes in a shuffled order keeps every class represented.
    by_class: dict[int, list[int]] = {}
    for i in order.tolist():
        by_class.setdefault(int(labels[i]), []).append(i)
    picked: list[int] = []
    queues = list(by_class.values())
    while len(picked) < MAX_IMAGES:
        for q in queues:
            if q and len(picked) < MAX_IMAGES:
                picked.append(q.pop())
    return torch.tensor(sorted(picked))


def measure_similarity(
    model_name: str,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int = 32,
    device: str | None = None,
    publish=None,
) -> SimilarityReport:
    """Domain similarity to ImageNet and LogME transferability of ``images``.

    ``images``: uint8 (N, 3, S, S), already resized and cropped to the
    model's input size; ``labels``: (N,) class indices. Uses at most
    MAX_IMAGES images (the same share of every class).
    """
    check_images(images)
    labels = check_labels(labels, images.shape[0])
    keep = _subsample(images.shape[0], labels)
    images, labels = images[keep], labels[keep]
    out = imagenet_pass(model_name, images, batch_size=batch_size, device=device, publish=publish)
    return similarity_report(model_name, out["logits"], out["features"], out["bn_kl"], labels)


def similarity_report(model_name: str, logits: torch.Tensor, features: torch.Tensor, bn_kl,
                      labels: torch.Tensor) -> SimilarityReport:
    """The report from what the pretrained network said about the images.

    ``logits``: its head's outputs; ``features``: the classifier's input
    (penultimate features) of the labelled images, with ``labels``;
    ``bn_kl``: per BatchNorm layer, the KL of the images' input statistics
    to the stored ones (empty for a model without BatchNorm). Only the
    signals that apply to the model are used (``signals_used``).
    """
    signals = {"images": float(logits.shape[0])}
    scores, used = [], []
    if _has_imagenet_head(model_name, logits.shape[1]):
        probs = logits.double().softmax(1)
        entropy = float((-(probs * probs.clamp_min(1e-12).log()).sum(1) / math.log(probs.shape[1])).mean())
        head_score = _between(entropy, ENTROPY_IMAGENET, ENTROPY_UNRELATED)
        signals.update(mean_max_softmax=float(probs.max(1).values.mean()), normalised_entropy=entropy,
                       head_score=head_score)
        scores.append(head_score)
        used.append(HEAD)
    bn = list(bn_kl)
    if bn:
        kl = float(sum(bn) / len(bn))
        third = max(len(bn) // 3, 1)
        bn_score = _between(math.log(max(kl, 1e-9)), math.log(BN_KL_IMAGENET), math.log(BN_KL_UNRELATED))
        signals.update(
            bn_kl_mean=kl,
            bn_kl_early=float(sum(bn[:third]) / third),
            bn_kl_late=float(sum(bn[-third:]) / third),
            bn_layers=float(len(bn)),
            bn_score=bn_score,
        )
        scores.append(bn_score)
        used.append(STATISTICS)
    similarity = sum(scores) / len(scores) if scores else 0.5

    n_classes = int(torch.unique(labels).numel())
    if n_classes >= 2:
        lm = logme(features, labels)
        transfer, explained = lm.logme, lm.explained
    else:
        log.warning("measure_similarity: the labels hold one class; transferability needs two or more")
        transfer, explained = float("nan"), float("nan")
    signals.update(logme=transfer, logme_explained=explained, classes=float(n_classes))
    report = SimilarityReport(
        similarity=round(similarity, 4),
        transferability=transfer,
        transferability_normalised=explained,
        signals=signals,
        signals_used=tuple(used),
    )
    report.explanation = _explain(report)
    return report


def _explain(r: SimilarityReport) -> str:
    sig = r.signals
    verdict = "similar to" if r.similarity >= SIMILAR_ABOVE else "different from"
    if not r.signals_used:
        parts = ["No similarity signal applies to this model: it has neither an ImageNet head nor BatchNorm "
                 "statistics, so similarity reads a neutral 0.50; transferability below still measures its features."]
    else:
        parts = [f"Similarity {r.similarity:.2f}: these images look {verdict} the ImageNet photos the network was "
                 f"trained on (signals used: {', '.join(r.signals_used)})."]
    if HEAD in r.signals_used:
        parts.append(
            f"Its ImageNet head is {'fairly confident' if sig['head_score'] >= 0.5 else 'unsure'} on them "
            f"(mean top-1 probability {sig['mean_max_softmax']:.2f}, entropy {sig['normalised_entropy']:.0%} "
            "of the maximum).")
    elif r.signals_used:
        parts.append("This model has no ImageNet head of its own; its BatchNorm statistics alone decide.")
    if "bn_kl_mean" in sig:
        near = "close to" if sig["bn_score"] >= 0.5 else "far from"
        parts.append(
            f"Their activation statistics lie {near} the ImageNet statistics stored in the network's "
            f"BatchNorm layers (mean KL {sig['bn_kl_mean']:.3f} nats per channel; early layers "
            f"{sig['bn_kl_early']:.3f}, late {sig['bn_kl_late']:.3f})."
        )
    elif HEAD in r.signals_used:
        parts.append("This model has no BatchNorm statistics; the head's confidence alone decides.")
    if math.isnan(r.transferability):
        parts.append("Transferability needs labels of at least two classes.")
    else:
        parts.append(
            f"Transferability (LogME) {r.transferability:.2f} nats per image: the frozen penultimate "
            f"features explain {r.transferability_normalised:.0%} of the label variance, so a linear head "
            f"on frozen features should separate these classes {'well' if r.transferability_normalised >= 0.6 else 'only partly'}."
            " Similarity says whether the images look like ImageNet; transferability says whether the "
            "frozen features tell these classes apart. They can differ."
        )
    return " ".join(parts)
