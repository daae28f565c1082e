"""Augmentation and normalisation on batched tensors, on whatever device the batch is on.

Each sample draws its own random parameters, but the work is a handful of
batched tensor ops: crop, rotation and flip are one ``affine_grid`` /
``grid_sample`` per batch, colour jitter is broadcast per-sample factors.
Parameters are drawn on the CPU (from the generator given, or the global
seed) and moved to the batch's device, so a seed gives the same augmentation
on a CPU and on a GPU.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

import torch
import torch.nn.functional as F

_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as torchvision's rgb_to_grayscale
_LOG_RATIO = (math.log(3 / 4), math.log(4 / 3))  # aspect ratios RandomResizedCrop draws from


@dataclass(frozen=True)
class Augment:
    flip: bool = False  # horizontal flip with probability 1/2
    rotation: float = 0.0  # uniform in [-rotation, +rotation] degrees
    color_jitter: float = 0.0  # brightness, contrast, saturation factors uniform in [1-s, 1+s]
    random_resized_crop: float | None = None  # min area fraction of the crop; None or 0: off

    def __post_init__(self):
        if not 0.0 <= float(self.rotation) <= 180.0:
            raise ValueError(f"rotation: must be between 0 and 180 degrees, got {self.rotation!r}")
        if not 0.0 <= float(self.color_jitter) < 1.0:
            raise ValueError(f"color_jitter: must be in [0, 1), got {self.color_jitter!r}")
        c = self.random_resized_crop
        if c is not None and not 0.0 <= float(c) <= 1.0:
            raise ValueError(f"random_resized_crop: must be a minimum area fraction in (0, 1], got {c!r}")

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "Augment":
        if name not in PRESETS:
            raise ValueError(f"augmentation preset: unknown {name!r}; known: {', '.join(PRESETS)}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(
                f"augmentation: unknown switch(es) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return replace(PRESETS[name], **overrides)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def _crop(self) -> bool:
        return bool(self.random_resized_crop) and float(self.random_resized_crop) < 1.0

    @property
    def is_identity(self) -> bool:
        """No random op is on: the same input always gives the same output."""
        return not (self.flip or self.rotation or self.color_jitter or self._crop)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment a float batch in [0, 1] of shape (B, 3, H, W); returns a new tensor."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"augment: expected a (B, 3, H, W) batch, got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"augment: expected floats in [0, 1], got {x.dtype}; use x.float() / 255")
        if self.is_identity or x.shape[0] == 0:
            return x
        b = x.shape[0]
        # a fixed number of draws in a fixed order: reproducible whatever is switched on
        # columns: 0-3 crop, 4 angle, 5 flip, 6-8 colour
        u = torch.rand(b, 9, generator=generator)
        if self.flip or self.rotation or self._crop:
            x = self._geometry(x, u)
        if self.color_jitter:
            x = self._colour(x, u[:, 6:9])
        return x

    def _geometry(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        # crop: width/height as fractions of the image, centre in normalised [-1, 1] coordinates
        sw = torch.ones(b)
        sh = torch.ones(b)
        cx = torch.zeros(b)
        cy = torch.zeros(b)
        if self._crop:
            lo = float(self.random_resized_crop)
            area = lo + (1 - lo) * u[:, 0]
            ratio = torch.exp(_LOG_RATIO[0] + (_LOG_RATIO[1] - _LOG_RATIO[0]) * u[:, 1])
            sw = torch.sqrt(area * ratio).clamp(max=1.0)
            sh = torch.sqrt(area / ratio).clamp(max=1.0)
            cx = (2 * u[:, 2] - 1) * (1 - sw)
            cy = (2 * u[:, 3] - 1) * (1 - sh)
        angle = torch.zeros(b)
        if self.rotation:
            angle = (2 * u[:, 4] - 1) * math.radians(float(self.rotation))
        flip = torch.ones(b)
        if self.flip:
            flip = torch.where(u[:, 5] < 0.5, -1.0, 1.0)
        cos, sin = torch.cos(angle), torch.sin(angle)
        # input = S @ R @ F @ output + centre
        theta = torch.stack(
            [
                torch.stack([sw * cos * flip, -sw * sin, cx], dim=1),
                torch.stack([sh * sin * flip, sh * cos, cy], dim=1),
            ],
            dim=1,
        ).to(device=x.device, dtype=x.dtype)
        grid = _affine_grid(theta, x.shape[2], x.shape[3])
        # reflection: rotated corners show more texture, not black wedges
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    def _colour(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        # Each step is about one pass over the batch (lerp and clamp in place):
        # colour jitter is memory-bound on a CPU.
        s = float(self.color_jitter)
        f = (1 - s + 2 * s * u).to(device=x.device, dtype=x.dtype)  # (B, 3): brightness, contrast, saturation
        brightness = f[:, 0].view(-1, 1, 1, 1)
        contrast = f[:, 1].view(-1, 1, 1, 1)
        saturation = f[:, 2].view(-1, 1, 1, 1)
        x = (x * brightness).clamp_(0, 1)  # a new tensor: the caller's batch is left alone
        grey_mean = _grey(x).mean(dim=(2, 3), keepdim=True)
        # (x - m) * c + m, as x moved towards m by (1 - c)
        x.lerp_(grey_mean, 1 - contrast).clamp_(0, 1)
        return x.lerp_(_grey(x), 1 - saturation).clamp_(0, 1)


def _grey(x: torch.Tensor) -> torch.Tensor:
    """Luma (B, 1, H, W): a weighted sum of the channel planes (a 1x1 convolution to one
    channel is far slower on a CPU)."""
    g = x[:, 0:1] * _LUMA[0]
    g.add_(x[:, 1:2], alpha=_LUMA[1])
    return g.add_(x[:, 2:3], alpha=_LUMA[2])


def _affine_grid(theta: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``F.affine_grid(theta, (B, C, h, w), align_corners=False)`` as two broadcast passes.

    The library version multiplies every pixel's (x, y, 1) by theta in a
    batched matmul with an inner dimension of 3, which on a CPU cost as much
    as the resampling itself; an affine map is separable into a per-column
    and a per-row term.
    """
    b = theta.shape[0]
    xs = (torch.arange(w, device=theta.device, dtype=theta.dtype) * 2 + 1) / w - 1  # pixel centres in [-1, 1]
    ys = (torch.arange(h, device=theta.device, dtype=theta.dtype) * 2 + 1) / h - 1
    grid = torch.empty((b, h, w, 2), device=theta.device, dtype=theta.dtype)
    for k in range(2):
        col = theta[:, k, 0, None] * xs  # (B, W)
        row = theta[:, k, 1, None] * ys + theta[:, k, 2, None]  # (B, H)
        torch.add(row[:, :, None], col[:, None, :], out=grid[..., k])
    return grid


PRESETS: dict[str, Augment] = {
    "none": Augment(),
    "light": Augment(flip=True, random_resized_crop=0.8, color_jitter=0.1),
    "strong": Augment(flip=True, rotation=15.0, color_jitter=0.3, random_resized_crop=0.4),
}
