"""An image as a model's input: the one place that resizes, crops, scales and normalises.

Every model's spec carries its :class:`Preprocess` (``get_spec(name).preprocess``,
taken from the weights), and everything that feeds a network goes through
these two steps with it: the image store, training, the strategy's feature
passes, prediction, Grad-CAM and the exported models.

    pixels = to_pixels(rgb_image, p)        # PIL RGB -> uint8 (3, S, S): resized, centre-cropped (p.crop_mode)
    x = Normalize(p)(batch)                 # uint8 or [0, 1] float (N, 3, S, S) -> (x / 255 - mean) / std

The geometry follows timm's eval transform (``transforms_imagenet_eval``):
``resize_size`` is ``input_size / crop_pct``; crop mode "center" resizes the
shorter side to it and crops the centre (torchvision's weights do the same),
"squash" resizes both sides to it (aspect ratio not kept) and crops, "border"
fits the longer side and pads with the mean colour.

Images stay uint8 until the last moment (a quarter of the memory of float,
decoded once); scaling and normalising happen in batches on the device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image
from torch import nn
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes the network's input tensor."""

    # geometry: resize (to resize_size, as crop_mode says), then centre-crop to a square
    input_size: int = 224
    resize_size: int = 256
    interpolation: str = "bilinear"
    # normalisation of [0, 1] pixels
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    # timm's names: the share of the resized image the crop keeps (None: input_size / resize_size)
    crop_pct: float | None = None
    crop_mode: str = "center"  # "center" | "squash" | "border"

    def __post_init__(self):
        if self.crop_mode not in CROP_MODES:
            raise ValueError(f"crop_mode: one of {', '.join(CROP_MODES)}, got {self.crop_mode!r}")

    def to_dict(self) -> dict:
        return {
            "input_size": self.input_size,
            "resize_size": self.resize_size,
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
            "crop_pct": self.crop_fraction,
            "crop_mode": self.crop_mode,
        }

    @property
    def crop_fraction(self) -> float:
        return self.crop_pct if self.crop_pct is not None else round(self.input_size / self.resize_size, 4)

    def timm_config(self) -> dict:
        """The same settings with timm's key names (``resolve_data_config``'s), as ``layers --json`` shows them."""
        return {
            "input_size": [3, self.input_size, self.input_size],
            "interpolation": self.interpolation,
            "crop_pct": self.crop_fraction,
            "crop_mode": self.crop_mode,
            "mean": list(self.mean),
            "std": list(self.std),
        }


CROP_MODES = ("center", "squash", "border")


def to_pixels(img: Image.Image, p: Preprocess) -> torch.Tensor:
    """An upright RGB PIL image as the model's uint8 input (3, S, S)."""
    mode = InterpolationMode(p.interpolation)
    s = p.input_size
    if p.crop_mode == "squash":
        img = TF.resize(img, [p.resize_size, p.resize_size], interpolation=mode, antialias=True)
    elif p.crop_mode == "border":
        w, h = img.size
        scale = p.resize_size / max(w, h)
        size = [max(1, round(h * scale)), max(1, round(w * scale))]
        img = TF.resize(img, size, interpolation=mode, antialias=True)
        # Pad to the square with the mean colour (timm's CenterCropOrPad fill), then crop.
        pad_w, pad_h = max(s - size[1], 0), max(s - size[0], 0)
        if pad_w or pad_h:
            fill = tuple(round(255 * v) for v in p.mean)
            img = TF.pad(img, [pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2], fill=fill)
    else:
        img = TF.resize(img, [p.resize_size], interpolation=mode, antialias=True)
    img = TF.center_crop(img, [s, s])
    return TF.pil_to_tensor(img)


def to_unit(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels as float32 in [0, 1] (a new tensor)."""
    return pixels.float().div_(255)


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """``(x - mean) / std`` per channel on x's device; uint8 input is scaled to [0, 1] first."""
    if x.dtype == torch.uint8:
        x = to_unit(x)
    elif not x.is_floating_point():
        raise ValueError(f"normalize: expected uint8 or float images, got {x.dtype}")
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


class Normalize(nn.Module):
    """A model's normalisation as a module: its constants move with ``.to(device)`` and export with it."""

    def __init__(self, p: Preprocess):
        super().__init__()
        self.register_buffer("mean", torch.tensor(p.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(p.std).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 pixels or [0, 1] floats (N, 3, H, W) -> the network's input."""
        if x.dtype == torch.uint8:
            return self.normalize_(to_unit(x))
        return (x - self.mean) / self.std

    def normalize_(self, x: torch.Tensor) -> torch.Tensor:
        """In place, for a float batch that nothing else holds (saves a copy of the batch per step)."""
        return x.sub_(self.mean).div_(self.std)
