"""Base versus fine-tuned: what the pretrained network saw, and what the run learnt to say.

The base model answers with its own ImageNet head, the run with its new
head; side by side they show what transferred (a "brick wall" photo that
ImageNet calls "tile roof" and the run calls "brick").
"""

from __future__ import annotations

from pathlib import Path

from ..predict import base_predictor, run_predictor


def _plain(preds: list[dict]) -> list[dict]:
    return [{"label": p["label"], "probability": p["probability"]} for p in preds]


def compare_base(run_dir: str | Path, image, top_k: int = 5, *, device: str = "cpu") -> dict:
    """Top-k of the base model's ImageNet head and of the run's fine-tuned head for one image.

    Returns ``{"base": [{label, probability}], "finetuned": [...], "base_model": name}``.
    A torchvision base model needs its ImageNet weights (cached, or a
    download when online); without them ``WeightsUnavailable`` says so.
    """
    if not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k: must be a positive integer, got {top_k!r}")
    tuned = run_predictor(run_dir, device)
    base = base_predictor(tuned.model_name, device)
    inputs = tuned.inputs([image])
    # One decode serves both when the preprocessing is the same (it is, for one model name).
    return {
        "base": _plain(_top(base, inputs, top_k)),
        "finetuned": _plain(_top(tuned, inputs, top_k)),
        "base_model": tuned.model_name,
    }


def _top(predictor, inputs, k: int) -> list[dict]:
    probs = predictor.probabilities(inputs)[0]
    values, indices = probs.topk(min(k, probs.numel()))
    return [{"label": predictor.classes[i], "probability": float(v)} for v, i in zip(values.tolist(), indices.tolist())]
