"""Predictions from a trained run, or from a base model's own ImageNet head.

Images go through exactly the preprocessing the model was trained with
(:mod:`tl_studio.preprocess` with the registry's spec: resize the shorter
side, centre-crop, normalise).
Files are opened with the dataset layer's safe decoder (format allow-list,
pixel-count cap), so an upload is as untrusted here as in an import.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from . import runs
from .plan import Plan
from .preprocess import Normalize, Preprocess, to_pixels
from .registry import get_spec
from .surgery import TransferModel, build_model

log = logging.getLogger(__name__)


def image_to_input(image, p: Preprocess) -> torch.Tensor:
    """A path, PIL image or HxWx3 uint8 array (a webcam frame) as uint8 (3, S, S)."""
    from .data.images import load_rgb, to_rgb

    if isinstance(image, (str, Path)):
        return to_pixels(load_rgb(Path(image), min_side=p.resize_size), p)
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    if isinstance(image, Image.Image):
        return to_pixels(to_rgb(image), p)
    raise TypeError(f"cannot read an image from {type(image).__name__}")


class Normalized(nn.Module):
    """A classifier that takes [0, 1] RGB (or uint8 pixels) and normalises inside (what exports ship)."""

    def __init__(self, model: nn.Module, p: Preprocess):
        super().__init__()
        self.model = model
        self.normalize = Normalize(p)

    def forward(self, x):
        return self.model(self.normalize(x))


def load_model(run_dir: str | Path, device: str = "cpu") -> tuple[TransferModel, runs.RunInfo]:
    """The trained model of a run, with its weights checked against its plan."""
    info = runs.load_run(run_dir)
    state, meta = runs.load_weights(info.weights)
    classes = info.classes or json.loads(meta.get("classes", "[]"))
    if meta.get("plan"):  # a run made before the plan was stored once, in config.json
        saved = Plan.from_json(meta["plan"])
        if saved != info.plan:
            log.warning("%s: plan in weights metadata differs from config.json; using the weights' plan", run_dir)
            info.plan = saved
    elif meta.get("plan_sha256") and meta["plan_sha256"] != runs.plan_sha256(info.config["plan"]):
        log.warning("%s: the weights were saved under another plan than the one in config.json", run_dir)
    model = build_model(info.plan, pretrained=False, class_names=classes)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise runs.RunError(f"{info.weights}: weights do not fit the run's plan ({str(exc).splitlines()[0]})") from None
    info.classes = classes
    return model.to(device).eval(), info


class Predictor:
    def __init__(self, model: nn.Module, classes: list[str], model_name: str, device: str = "cpu"):
        self.model_name = model_name
        self.preprocess = get_spec(model_name).preprocess
        self.classes = list(classes)
        self.device = torch.device(device)
        self.net = Normalized(model, self.preprocess).to(self.device).eval()
        self._lock = threading.Lock()  # one forward at a time per predictor (shared by UI users)

    @classmethod
    def from_run(cls, run_dir: str | Path, device: str = "cpu") -> "Predictor":
        model, info = load_model(run_dir, device)
        return cls(model, info.classes, info.plan.model, device)

    @classmethod
    def from_pretrained(cls, model_name: str, device: str = "cpu", pretrained=True) -> "Predictor":
        """The base network with its original head (``pretrained``: True, or a local .safetensors file)."""
        spec = get_spec(model_name)
        categories = spec.categories
        if not categories:
            raise ValueError(f"{model_name} has no classifier of its own (a feature backbone): "
                             "train a head on your data first")
        return cls(spec.build(pretrained=pretrained), categories, model_name, device)

    def inputs(self, images) -> torch.Tensor:
        return torch.stack([image_to_input(im, self.preprocess) for im in images])

    @torch.inference_mode()
    def probabilities(self, batch_uint8: torch.Tensor) -> torch.Tensor:
        x = batch_uint8.to(self.device)
        with self._lock:
            return self.net(x).float().softmax(-1).cpu()

    def predict(self, images, top_k: int = 5) -> list[list[dict]]:
        """Top-k labels with probabilities for each image."""
        probs = self.probabilities(self.inputs(images))
        k = max(1, min(top_k, probs.shape[1]))
        values, indices = probs.topk(k, dim=1)
        return [
            [{"label": self.classes[i], "probability": float(v), "index": int(i)} for v, i in zip(vs, ix)]
            for vs, ix in zip(values.tolist(), indices.tolist())
        ]


@functools.lru_cache(maxsize=4)
def _cached_run(path: str, mtime: float, device: str) -> Predictor:
    return Predictor.from_run(path, device)


def run_predictor(run_dir: str | Path, device: str = "cpu") -> Predictor:
    """A predictor for a run, reused until its weights file changes."""
    weights = Path(run_dir) / runs.WEIGHTS
    mtime = weights.stat().st_mtime if weights.exists() else 0.0
    return _cached_run(str(Path(run_dir).resolve()), mtime, device)


@functools.lru_cache(maxsize=2)
def base_predictor(model_name: str, device: str = "cpu") -> Predictor:
    return Predictor.from_pretrained(model_name, device)
