"""An image as a model's input: the one place that resizes, crops, scales and normalises.

Every model's spec carries its :class:`Preprocess` (``get_spec(name).preprocess``,
taken from the weights), and everything that feeds a network goes through
these two steps with it: the image store, training, the strategy's feature
passes, prediction, Grad-CAM and the exported models.

    pixels = to_pixels(rgb_image, p)        # PIL RGB -> uint8 (3, S, S): shorter side resized, centre crop
    x = Normalize(p)(batch)                 # uint8 or [0, 1] float (N, 3, S, S) -> (x / 255 - mean) / std

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

    # geometry: resize the shorter side, then centre-crop to a square
    input_size: int = 224
    resize_size: int = 256
    interpolation: str = "bilinear"
    # normalisation of [0, 1] pixels
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def to_dict(self) -> dict:
        return {
            "input_size": self.input_size,
            "resize_size": self.resize_size,
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
        }


def to_pixels(img: Image.Image, p: Preprocess) -> torch.Tensor:
    """An upright RGB PIL image as the model's uint8 input (3, S, S)."""
    img = TF.resize(img, [p.resize_size], interpolation=InterpolationMode(p.interpolation), antialias=True)
    img = TF.center_crop(img, [p.input_size, p.input_size])
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
