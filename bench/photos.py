"""A benchmark dataset LIKE ImageNet, offline: random crops of real photographs.

``python -m bench.photos OUT [--train 32 --val 50 --seed 0 --size 96 ...]``
writes ``OUT/train/<class>/*.png`` and ``OUT/val/<class>/*.png`` and
``OUT/photos.json``, the same layout as :mod:`bench.glyphs`.

One class per photograph: each image is a crop of it at a random scale,
aspect ratio and place, maybe mirrored, with its brightness, contrast and
saturation jittered (so that no class is told apart by its colour
histogram alone). The photographs are the ones scikit-image, scikit-learn
and matplotlib install with themselves, all free to use (``PHOTOS`` names
each one's licence; bench/README.md lists them too). Nothing is downloaded
and nothing is copied into this repository: the files are generated from
the installed packages.

Two portraits of women in uniform (astronaut, grace_hopper) and two photos
dominated by sky (rocket, china) make some crops genuinely ambiguous;
small crops (down to ``--min-scale`` of the photo's shorter side) show
parts rather than the whole, as many ImageNet photos do.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import math
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageEnhance

log = logging.getLogger("bench.photos")

SPLITS = {"train": 0, "val": 1}


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        return getattr(skimage.data, name)()

    return load


def _sklearn(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(name)

    return load


def _matplotlib(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import matplotlib.cbook

        with Image.open(matplotlib.cbook.get_sample_data(name)) as im:
            return np.asarray(im.convert("RGB"))

    return load


# class name -> (loader, source and licence). Colour photographs only: a
# single grey photo among colour ones would be found by its lack of colour.
PHOTOS: dict[str, tuple[Callable[[], np.ndarray], str]] = {
    "astronaut": (_skimage("astronaut"), "scikit-image data.astronaut: Eileen Collins, NASA; public domain"),
    "chelsea": (_skimage("chelsea"), "scikit-image data.chelsea: a cat; CC0 (Stefan van der Walt)"),
    "coffee": (_skimage("coffee"), "scikit-image data.coffee: a coffee cup; CC0 (Rachel Michetti)"),
    "rocket": (_skimage("rocket"), "scikit-image data.rocket: DSCOVR launch, SpaceX; public domain"),
    "hubble": (_skimage("hubble_deep_field"), "scikit-image data.hubble_deep_field: NASA; public domain"),
    "china": (_sklearn("china.jpg"), "scikit-learn load_sample_image('china.jpg'): a temple; CC BY 2.0, "
              "danielbuechele on Flickr"),
    "flower": (_sklearn("flower.jpg"), "scikit-learn load_sample_image('flower.jpg'): a flower; CC BY 2.0, "
               "vultilion on Flickr"),
    "grace_hopper": (_matplotlib("grace_hopper.jpg"), "matplotlib sample_data grace_hopper.jpg: Grace Hopper, "
                     "official U.S. Navy photograph; public domain"),
}


@dataclass(frozen=True)
class Spec:
    """Everything that decides the files: same Spec, same bytes."""

    photos: tuple[str, ...] = tuple(PHOTOS)
    train: int = 32
    val: int = 50
    size: int = 96
    seed: int = 0
    min_scale: float = 0.1  # crop side, smallest, as a fraction of the photo's shorter side
    max_scale: float = 0.4
    jitter: float = 0.4  # brightness, contrast and saturation factors uniform in [1 - j, 1 + j]
    grey: float = 0.25  # probability that a crop is greyscale
    # Crops of a class are centred in alternate cells of a grid x grid
    # checkerboard, train on one colour and val on the other: a val crop
    # shows a part of the photo no training crop is centred on, so the task
    # is recognising the photo's content, not looking a patch up.
    grid: int = 4

    def __post_init__(self):
        unknown = [p for p in self.photos if p not in PHOTOS]
        if unknown or len(set(self.photos)) < 2:
            raise ValueError(f"photos: need two or more of {', '.join(PHOTOS)}; got {', '.join(self.photos)}")
        if not 0 < self.min_scale <= self.max_scale <= 1:
            raise ValueError(f"scales: need 0 < min_scale <= max_scale <= 1, got {self.min_scale}, {self.max_scale}")
        if self.train < 1 or self.val < 0:
            raise ValueError(f"train/val: need train >= 1 and val >= 0 images per class, got {self.train}/{self.val}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter: must be in [0, 1), got {self.jitter}")
        if not 0 <= self.grey <= 1:
            raise ValueError(f"grey: must be a probability in [0, 1], got {self.grey}")
        if self.grid < 1:
            raise ValueError(f"grid: must be >= 1 (1: no train/val regions), got {self.grid}")


@functools.lru_cache(maxsize=None)
def photo(name: str) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(PHOTOS[name][0]()[..., :3]))


def _centre(w: int, h: int, rng: np.random.Generator, grid: int, parity: int) -> tuple[float, float]:
    """A point drawn uniformly from the checkerboard cells (i + j) % 2 == parity."""
    cells = [(i, j) for i in range(grid) for j in range(grid) if (i + j) % 2 == parity]
    i, j = cells[int(rng.integers(len(cells)))]
    return (i + rng.random()) * w / grid, (j + rng.random()) * h / grid


# A crop whose grey levels vary less than this (standard deviation) is blank
# (hazy sky brightened to white, empty space): it could not be classified,
# so another is drawn.
MIN_STD = 6.0
TRIES = 50


def crop(src: Image.Image, rng: np.random.Generator, spec: Spec, split: str = "train") -> Image.Image:
    """One random crop of ``src`` from ``split``'s cells that is not blank (see MIN_STD)."""
    for _ in range(TRIES):
        img = _one_crop(src, rng, spec, split)
        if float(np.asarray(img.convert("L"), dtype=np.float32).std()) >= MIN_STD:
            return img
    raise RuntimeError(f"{TRIES} crops in a row were blank; the photo or the settings leave nothing to see")


def _one_crop(src: Image.Image, rng: np.random.Generator, spec: Spec, split: str) -> Image.Image:
    """A random crop from ``split``'s cells, maybe mirrored or grey, jittered, resized to spec.size."""
    w, h = src.size
    side = rng.uniform(spec.min_scale, spec.max_scale) * min(w, h)
    aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
    cw, ch = min(w, side * math.sqrt(aspect)), min(h, side / math.sqrt(aspect))
    cx, cy = _centre(w, h, rng, spec.grid, SPLITS[split] % 2) if spec.grid > 1 else (w / 2, h / 2)
    # the box keeps its centre where possible and is shifted to lie inside the photo
    x0 = min(max(cx - cw / 2, 0.0), w - cw)
    y0 = min(max(cy - ch / 2, 0.0), h - ch)
    img = src.resize((spec.size, spec.size), Image.Resampling.BICUBIC, box=(x0, y0, x0 + cw, y0 + ch))
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        img = enhance(img).enhance(rng.uniform(1 - spec.jitter, 1 + spec.jitter))
    if rng.random() < spec.grey:
        img = img.convert("L").convert("RGB")
    return img


def image_rng(seed: int, split: str, cls: int, index: int) -> np.random.Generator:
    """The random numbers of one image, independent of how many others are drawn."""
    return np.random.default_rng([seed, SPLITS[split], cls, index])


def generate(out: str | Path, spec: Spec = Spec(), *, overwrite: bool = False) -> dict:
    """Write the dataset under ``out``; returns the manifest (also written to ``out/photos.json``)."""
    out = Path(out)
    existing = [out / s for s in SPLITS if (out / s).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{out}: already holds {', '.join(p.name for p in existing)}/; pass overwrite=True "
                              "(--overwrite) to replace them")
    for p in existing:
        shutil.rmtree(p)
    counts = {"train": spec.train, "val": spec.val}
    for split, count in counts.items():
        for ci, name in enumerate(spec.photos):
            folder = out / split / name
            folder.mkdir(parents=True, exist_ok=True)
            src = photo(name)
            for i in range(count):
                crop(src, image_rng(spec.seed, split, ci, i), spec, split).save(
                    folder / f"{name}_{i:04d}.png", optimize=False, compress_level=6)
    manifest = {
        "generator": "bench.photos",
        "spec": dataclasses.asdict(spec),
        "classes": list(spec.photos),
        "sources": {name: PHOTOS[name][1] for name in spec.photos},
        "counts": counts,
    }
    (out / "photos.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    log.info("%s: %d photos x (%d train + %d val) crops of %d px, seed %d", out, len(spec.photos), spec.train,
             spec.val, spec.size, spec.seed)
    return manifest


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.photos", description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="folder to write (train/ and val/ inside)")
    p.add_argument("--photos", default=",".join(PHOTOS), help="comma-separated classes (default: all)")
    p.add_argument("--train", type=int, default=32, help="training images per class")
    p.add_argument("--val", type=int, default=50, help="validation images per class")
    p.add_argument("--size", type=int, default=96, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-scale", type=float, default=Spec.min_scale)
    p.add_argument("--max-scale", type=float, default=Spec.max_scale)
    p.add_argument("--jitter", type=float, default=Spec.jitter)
    p.add_argument("--grey", type=float, default=Spec.grey, help="probability of a greyscale crop")
    p.add_argument("--grid", type=int, default=Spec.grid,
                   help="train and val crops centred in alternate cells of a GRID x GRID checkerboard (1: anywhere)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT/train and OUT/val if present")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        spec = Spec(tuple(s.strip() for s in args.photos.split(",") if s.strip()), args.train, args.val, args.size,
                    args.seed, args.min_scale, args.max_scale, args.jitter, args.grey, args.grid)
        m = generate(args.out, spec, overwrite=args.overwrite)
    except (ValueError, FileExistsError, RuntimeError) as exc:
        p.exit(2, f"python -m bench.photos: error: {exc}\n")
    print(json.dumps({"out": str(args.out), "classes": m["classes"], "counts": m["counts"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
