"""Why the model said what it said: Grad-CAM for CNNs, attention rollout for ViT.

Grad-CAM (Selvaraju et al., 2017): the gradient of the class score with
respect to a spatial feature map, averaged over space, weights that map's
channels; the ReLU of the weighted sum shows where evidence for the class
lies. It is written with plain forward hooks, so it works for every CNN
family of the registry and for any named layer inside the kept body.

A ViT's blocks output token sequences, not maps. For those the explanation
is attention rollout (Abnar & Zuidema, 2020): the class token's attention,
multiplied through the layers with the residual connections. It is not
class-specific, which the result says in ``method``.

The heatmap is returned at the image's original size: the model saw a
centre crop, so the area outside the crop is 0 (the model never looked there).
"""

from __future__ import annotations

import functools
import logging
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from .. import runs
from ..predict import load_model
from ..preprocess import Normalize, Preprocess, to_pixels
from ..registry import get_spec
from ..surgery import TransferModel

log = logging.getLogger(__name__)

GRAD_CAM, ROLLOUT = "grad-cam", "attention rollout"


class GradCAMUnavailable(Exception):
    """This model (or layer) has no spatial map to explain; the message says why in plain words."""


@dataclass
class GradCAMResult:
    heatmap: np.ndarray  # (H, W) float32 in [0, 1] at the image's original size
    overlay: Image.Image  # the image with the heatmap blended over it
    target_index: int
    target_label: str
    layer: str
    probability: float = float("nan")  # the model's probability for the target
    method: str = GRAD_CAM


# ---- models and their locks ---------------------------------------------------------------
# Hooks live on the module, so two explanations on one model at once would see
# each other's activations: each model gets a lock, held for the whole pass.
_locks: "weakref.WeakKeyDictionary[nn.Module, threading.Lock]" = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()


def _lock_for(model: nn.Module) -> threading.Lock:
    with _locks_guard:
        lock = _locks.get(model)
        if lock is None:
            lock = _locks[model] = threading.Lock()
        return lock


@functools.lru_cache(maxsize=2)
def _cached_model(path: str, mtime: float) -> TransferModel:
    return load_model(path)[0]


def _model_of(run_dir_or_model) -> TransferModel:
    if isinstance(run_dir_or_model, TransferModel):
        return run_dir_or_model
    if isinstance(run_dir_or_model, (str, Path)):
        weights = Path(run_dir_or_model) / runs.WEIGHTS
        if not weights.is_file():
            raise runs.RunError(f"{run_dir_or_model}: not a run directory with {runs.WEIGHTS}")
        return _cached_model(str(Path(run_dir_or_model).resolve()), weights.stat().st_mtime)
    raise TypeError(f"expected a run directory or a TransferModel, got {type(run_dir_or_model).__name__}")


# ---- images -------------------------------------------------------------------------------
def _open(image) -> Image.Image:
    """Upright RGB at full resolution (the heatmap is returned at this size)."""
    from ..data.images import load_rgb, to_rgb

    if isinstance(image, (str, Path)):
        return load_rgb(Path(image))
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise TypeError(f"an image array must be uint8 (H, W, 3), got {image.dtype}")
        image = Image.fromarray(image)
    if isinstance(image, Image.Image):
        return to_rgb(image)
    raise TypeError(f"cannot read an image from {type(image).__name__}")


def _crop_box(width: int, height: int, p: Preprocess) -> tuple[float, float, float, float]:
    """Where the model's centre crop lies in the original image (left, top, right, bottom).

    Mirrors torchvision: resize the shorter side to ``resize_size`` (the longer
    side truncated), then crop ``input_size`` with round((size - crop) / 2).
    """
    if width <= height:
        rw, rh = p.resize_size, int(p.resize_size * height / width)
    else:
        rw, rh = int(p.resize_size * width / height), p.resize_size
    s = p.input_size
    top, left = int(round((rh - s) / 2.0)), int(round((rw - s) / 2.0))
    sx, sy = width / rw, height / rh
    return left * sx, top * sy, (left + s) * sx, (top + s) * sy


def _to_original(cam: torch.Tensor, size: tuple[int, int], p: Preprocess) -> np.ndarray:
    width, height = size
    l, t, r, b = _crop_box(width, height, p)
    x0, y0 = max(0, int(round(l))), max(0, int(round(t)))
    x1, y1 = min(width, max(x0 + 1, int(round(r)))), min(height, max(y0 + 1, int(round(b))))
    inner = F.interpolate(cam[None, None].float(), size=(y1 - y0, x1 - x0), mode="bilinear", align_corners=False)
    out = np.zeros((height, width), dtype=np.float32)
    out[y0:y1, x0:x1] = inner[0, 0].clamp(0, 1).numpy()
    return out


def overlay(image: Image.Image, heatmap: np.ndarray, alpha: float = 0.6, cmap: str = "jet") -> Image.Image:
    """The heatmap in colour over the image, opaque where the heat is, clear where there is none.

    (A uniform blend would tint the whole picture and hide what the model ignored.)
    """
    from matplotlib import colormaps

    colour = colormaps[cmap](heatmap)[..., :3]
    a = (alpha * np.clip(heatmap, 0, 1))[..., None]
    base = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
    return Image.fromarray(((1 - a) * base + a * colour).clip(0, 1).__mul__(255).astype(np.uint8), "RGB")


# ---- choosing what to explain -------------------------------------------------------------
def _layer_modules(model: TransferModel) -> dict[str, nn.Module]:
    """Every module of the kept body by its plan/layer-table name."""
    out: dict[str, nn.Module] = {}
    for name, stage in zip(model.layer_names, model.body):
        for sub, mod in stage.named_modules(prefix=name):
            out[sub] = mod
    return out


def _output_shapes(model: TransferModel) -> list[tuple[int, ...]]:
    """Shape (without batch) of each kept stage's output, from the model's layout."""
    return [model.layout.layer(n).output_shape for n in model.layer_names]


def _default_layer(model: TransferModel) -> tuple[str, str]:
    """(method, layer name): the last stage with a spatial map, or attention rollout for tokens."""
    shapes = _output_shapes(model)
    for name, shape in zip(reversed(model.layer_names), reversed(shapes)):
        if len(shape) == 1 or (len(shape) == 3 and shape[1] * shape[2] == 1):
            continue  # pooled (a vector, or a 1x1 map): no space left to explain; look earlier
        if len(shape) == 3:
            return GRAD_CAM, name
        # token sequences (ViT)
        if any(isinstance(m, nn.MultiheadAttention) for m in _body_through(model, name)):
            return ROLLOUT, name
        raise GradCAMUnavailable(
            f"{model.model_name}: the kept layers output token sequences without attention layers "
            "to follow, so there is no spatial map to explain"
        )
    raise GradCAMUnavailable(f"{model.model_name}: no kept layer keeps a spatial map to explain")


def _body_through(model: TransferModel, last: str):
    for name, stage in zip(model.layer_names, model.body):
        yield from stage.modules()
        if name == last:
            return


def _target(model: TransferModel, target, probs: torch.Tensor) -> int:
    if target is None:
        return int(probs.argmax())
    if isinstance(target, str):
        if target not in model.class_names:
            raise ValueError(f"target: unknown class {target!r}; classes are {', '.join(model.class_names)}")
        return model.class_names.index(target)
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool) and 0 <= target < len(probs):
        return int(target)
    raise ValueError(f"target: expected a class name or an index in [0, {len(probs)}), got {target!r}")


# ---- the two methods --------------------------------------------------------------------
def _grad_cam(model: TransferModel, x: torch.Tensor, module: nn.Module, layer: str, target):
    captured: dict[str, torch.Tensor] = {}

    def keep(_mod, _inp, out):
        if not isinstance(out, torch.Tensor):
            return None
        captured["a"] = out
        # Later in-place ops (a residual "+=") act on a copy, so the kept map stays intact.
        return out.clone()

    handle = module.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            # Gradient flows from the input even when every parameter is frozen.
            logits = model(x.requires_grad_(True))
    finally:
        handle.remove()
    a = captured.get("a")
    if a is None or a.ndim != 4:
        shape = "no tensor" if a is None else "x".join(map(str, a.shape[1:]))
        raise GradCAMUnavailable(
            f"layer {layer!r} outputs {shape}, not a spatial (channels x height x width) map; "
            "choose a convolutional layer"
        )
    probs = logits[0].detach().float().softmax(-1)
    t = _target(model, target, probs)
    (grad,) = torch.autograd.grad(logits[0, t], a)
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * a).sum(dim=1))[0].detach()
    return cam, t, float(probs[t])


def _rollout(model: TransferModel, x: torch.Tensor, last: str, target):
    attns: list[torch.Tensor] = []
    handles = []

    def ask_weights(_mod, args, kwargs):
        # torchvision's encoder asks for need_weights=False; rollout needs them, head-averaged.
        kwargs = dict(kwargs, need_weights=True, average_attn_weights=True)
        return args, kwargs

    def keep(_mod, _inp, out):
        attns.append(out[1].detach())

    for m in _body_through(model, last):
        if isinstance(m, nn.MultiheadAttention):
            handles.append(m.register_forward_pre_hook(ask_weights, with_kwargs=True))
            handles.append(m.register_forward_hook(keep))
    try:
        with torch.no_grad():
            probs = model(x)[0].float().softmax(-1)
    finally:
        for h in handles:
            h.remove()
    t = _target(model, target, probs)
    n = attns[0].shape[-1]
    eye = torch.eye(n)
    rollout = eye
    for a in attns:
        a = 0.5 * a[0].float() + 0.5 * eye  # the residual path carries half
        rollout = (a / a.sum(dim=-1, keepdim=True)) @ rollout
    patches = rollout[0, 1:]  # the class token's share of each patch
    side = int(round((n - 1) ** 0.5))
    if side * side != n - 1:
        raise GradCAMUnavailable(f"{model.model_name}: {n - 1} patch tokens do not form a square grid")
    return patches.reshape(side, side), t, float(probs[t])


def gradcam(run_dir_or_model, image, *, target=None, layer: str | None = None) -> GradCAMResult:
    """Explain one prediction of a run (or a TransferModel) on one image.

    ``target``: a class name or index (default: the predicted class).
    ``layer``: a layer name from the layer table, or anything inside a kept
    layer (default: the last kept stage that outputs a spatial map).
    Raises :class:`GradCAMUnavailable` when there is nothing spatial to explain.
    """
    model = _model_of(run_dir_or_model)
    p: Preprocess = get_spec(model.model_name).preprocess
    img = _open(image)
    x = Normalize(p)(to_pixels(img, p)[None])
    modules = _layer_modules(model)
    if layer is None:
        method, layer = _default_layer(model)
    elif layer not in modules:
        raise ValueError(
            f"layer: {layer!r} is not in the kept body of this {model.model_name} model "
            f"(kept layers: {model.layer_names[0]} ... {model.layer_names[-1]})"
        )
    else:
        method = GRAD_CAM
    with _lock_for(model):
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        try:
            x = x.to(device)
            if method == ROLLOUT:
                cam, t, prob = _rollout(model, x, layer, target)
            else:
                cam, t, prob = _grad_cam(model, x, modules[layer], layer, target)
        finally:
            model.train(was_training)
    cam = cam.cpu()
    peak = float(cam.max())
    if peak > 0:
        cam = cam / peak
    else:
        log.info("gradcam: no positive evidence for %r at %s; the heatmap is empty", model.class_names[t], layer)
    heat = _to_original(cam, img.size, p)
    return GradCAMResult(
        heatmap=heat,
        overlay=overlay(img, heat),
        target_index=t,
        target_label=model.class_names[t],
        layer=layer,
        probability=prob,
        method=method,
    )
