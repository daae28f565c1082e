"""A hard, offline benchmark dataset UNLIKE ImageNet: small grey scans of printed letters.

``python -m bench.glyphs OUT [--train 32 --val 50 --seed 0 --difficulty 1.0 ...]``
writes ``OUT/train/<class>/*.png`` and ``OUT/val/<class>/*.png`` (the
layout ``tl-studio train OUT`` reads) and ``OUT/glyphs.json`` (every setting,
so a folder says how it was made).

Each image is one character rendered with PIL from a TrueType font that
matplotlib ships (DejaVu Sans/Serif/Mono with their bold and oblique cuts,
STIX, Computer Modern), then jittered the way cheap scans of print are:
an affine warp (rotation, shear, scale, translation), a random stroke width,
grey ink on grey paper with uneven lighting, stray pen strokes, a scan at a
lower resolution, blur and sensor noise. The data shares what makes
ImageNet features a poor fit for small grey scans: no colour, no texture, no
objects, shapes of a few pixels; and like such scans it has few images per
class.

Every image draws its own random numbers from ``(seed, split, class,
index)``, so a seed gives the same files on every run, and changing
``--val`` leaves the training images as they were. The difficulty knobs are
maxima of per-image uniform draws; ``--difficulty`` scales them all
together from one preset (``Knobs.at``), and each can be overridden.
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

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

log = logging.getLogger("bench.glyphs")

# Ten lower-case letters, none the mirror image of another (b/d, p/q are
# left out): the engine's "light" and "strong" augmentations flip images
# horizontally, which would make mirror pairs the same class.
DEFAULT_CHARS = "aefghkmrst"
SPLITS = {"train": 0, "val": 1}  # part of each image's seed
# Fonts render at this multiple of the output size, then shrink: smooth edges
# at any size, and stroke widths finer than one output pixel.
SUPERSAMPLE = 4
# Matplotlib's fonts that draw ordinary letters at the ASCII code points.
# Left out: cmex10 and cmsy10 (math symbols there), LastResort (placeholder
# boxes), STIXNonUni*/STIXSiz* and the *Display fonts (no letters at all).
FONT_PREFIXES = ("DejaVuSans", "DejaVuSerif", "STIXGeneral", "cmb10", "cmmi10", "cmr10", "cmss10", "cmti10",
                 "cmtt10")
FONT_EXCLUDE = ("Display",)


@dataclass(frozen=True)
class Knobs:
    """How far each image may stray from a clean, centred, black-on-white glyph.

    Each field is the maximum of a uniform per-image draw unless it says otherwise.
    """

    rotation: float = 20.0  # degrees, either way
    shear: float = 0.3  # horizontal shear factor, either way
    scale: float = 0.25  # glyph size varies by this factor either way (1 +- scale) of its nominal size
    aspect: float = 0.15  # width / height varies by this factor either way
    translate: float = 0.12  # shift of the glyph's centre, as a fraction of the image side, either way
    stroke: float = 1.5  # extra ink around the outline, output pixels (0: the font's own weight)
    contrast: float = 0.35  # the LEAST |ink - paper| grey difference, as a fraction of 255
    lighting: float = 0.35  # uneven lighting: a linear ramp across the page, fraction of 255
    clutter: int = 3  # stray pen strokes per image (0..clutter)
    lowres: float = 0.45  # the scan's resolution, lowest as a fraction of the output size (1: full)
    blur: float = 1.0  # Gaussian blur radius in output pixels
    noise: float = 18.0  # Gaussian sensor noise, standard deviation in grey levels
    invert: float = 0.5  # probability of light ink on dark paper (not scaled by difficulty)

    @classmethod
    def at(cls, difficulty: float = 1.0, **overrides) -> "Knobs":
        """The preset with every nuisance scaled by ``difficulty`` (0: clean glyphs; 1: the default)."""
        if difficulty < 0:
            raise ValueError(f"difficulty: must be >= 0, got {difficulty!r}")
        hard, d = cls(), float(difficulty)

        def lerp(clean: float, preset: float, lo: float = 0.0, hi: float = math.inf) -> float:
            # written so that d = 1 gives the preset exactly, and d = 0 the clean value
            return min(max(clean * (1.0 - d) + preset * d, lo), hi)

        scaled = {
            "rotation": lerp(0.0, hard.rotation),
            "shear": lerp(0.0, hard.shear),
            "scale": lerp(0.0, hard.scale, hi=0.6),
            "aspect": lerp(0.0, hard.aspect, hi=0.6),
            "translate": lerp(0.0, hard.translate, hi=0.3),
            "stroke": lerp(0.0, hard.stroke),
            # lower contrast and a lower scan resolution are harder: clean is 0.9 apart, full resolution
            "contrast": lerp(0.9, hard.contrast, lo=0.05, hi=0.95),
            "lighting": lerp(0.0, hard.lighting, hi=0.9),
            "clutter": int(round(lerp(0.0, hard.clutter))),
            "lowres": lerp(1.0, hard.lowres, lo=0.15, hi=1.0),
            "blur": lerp(0.0, hard.blur),
            "noise": lerp(0.0, hard.noise),
            "invert": hard.invert,
        }
        scaled.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**scaled)


@dataclass(frozen=True)
class Spec:
    """Everything that decides the files: same Spec, same bytes."""

    chars: str = DEFAULT_CHARS
    train: int = 32
    val: int = 50
    size: int = 48
    seed: int = 0
    difficulty: float = 1.0
    knobs: Knobs | None = None  # None: Knobs.at(difficulty)
    glyph_height: float = 0.62  # nominal font size as a fraction of the image side

    def __post_init__(self):
        if self.knobs is None:
            object.__setattr__(self, "knobs", Knobs.at(self.difficulty))
        if len(set(self.chars)) != len(self.chars) or len(self.chars) < 2:
            raise ValueError(f"chars: need at least two distinct characters, got {self.chars!r}")
        if self.train < 1 or self.val < 0:
            raise ValueError(f"train/val: need train >= 1 and val >= 0 images per class, got {self.train}/{self.val}")
        if not 8 <= self.size <= 512:
            raise ValueError(f"size: must be 8..512 pixels, got {self.size}")


def class_name(ch: str) -> str:
    """A folder name that is unique even on case-insensitive file systems ("lower_a", "upper_A", "digit_3")."""
    if ch.isdigit():
        return f"digit_{ch}"
    if ch.isalpha() and ch.isascii():
        return f"{'upper' if ch.isupper() else 'lower'}_{ch}"
    return f"u{ord(ch):04x}"


@functools.lru_cache(maxsize=1)
def _font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


@functools.lru_cache(maxsize=8)
def fonts_for(chars: str) -> tuple[Path, ...]:
    """Matplotlib's TrueType fonts that have a glyph for every one of ``chars``, sorted by name."""
    from fontTools.ttLib import TTFont  # a matplotlib dependency

    out = []
    for path in sorted(_font_dir().glob("*.ttf")):
        if not path.name.startswith(FONT_PREFIXES) or any(x in path.name for x in FONT_EXCLUDE):
            continue
        cmap = TTFont(str(path), lazy=True).getBestCmap() or {}
        if all(ord(c) in cmap for c in chars):
            out.append(path)
    if not out:
        raise RuntimeError(f"no matplotlib font in {_font_dir()} draws all of {chars!r}")
    return tuple(out)


@functools.lru_cache(maxsize=512)
def _font(path: Path, px: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(path), px)


def _glyph_mask(ch: str, font: Path, px: int, stroke: int, canvas: int) -> Image.Image:
    """The character's ink coverage (L, 0..255), its ink box centred on a square canvas."""
    f = _font(font, px)
    pad = px + 2 * stroke
    img = Image.new("L", (2 * pad, 2 * pad), 0)
    ImageDraw.Draw(img).text((pad, pad), ch, font=f, fill=255, anchor="mm", stroke_width=stroke, stroke_fill=255)
    box = img.getbbox()
    if box is None:  # an empty glyph would be a silently wrong label
        raise RuntimeError(f"font {font.name} drew nothing for {ch!r}")
    ink = img.crop(box)
    out = Image.new("L", (canvas, canvas), 0)
    out.paste(ink, ((canvas - ink.width) // 2, (canvas - ink.height) // 2))
    return out


def _warp(mask: Image.Image, rng: np.random.Generator, k: Knobs) -> Image.Image:
    """Rotate, shear, scale and shift about the canvas centre (one resampling)."""
    n = mask.width
    theta = math.radians(rng.uniform(-k.rotation, k.rotation))
    shear = rng.uniform(-k.shear, k.shear)
    s = rng.uniform(1 - k.scale, 1 + k.scale)
    a = rng.uniform(1 - k.aspect, 1 + k.aspect)
    tx, ty = rng.uniform(-k.translate, k.translate, size=2) * n
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    fwd = rot @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag([s * math.sqrt(a), s / math.sqrt(a)])
    inv = np.linalg.inv(fwd)
    c = np.array([n / 2, n / 2])
    # PIL maps each output pixel back to its source: p_in = c + inv @ (p_out - c - t)
    off = c - inv @ (c + np.array([tx, ty]))
    coeffs = (inv[0, 0], inv[0, 1], off[0], inv[1, 0], inv[1, 1], off[1])
    return mask.transform((n, n), Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR)


def _clutter(mask: Image.Image, rng: np.random.Generator, k: Knobs, width: int) -> None:
    """Stray pen strokes (short lines and arcs) in the glyph's own ink, drawn in place."""
    n = mask.width
    draw = ImageDraw.Draw(mask)
    for _ in range(int(rng.integers(0, k.clutter + 1))):
        x0, y0 = rng.uniform(0, n, size=2)
        length = rng.uniform(0.1, 0.35) * n
        ang = rng.uniform(0, 2 * math.pi)
        w = max(1, int(width * rng.uniform(0.5, 1.0)))
        if rng.random() < 0.5:
            draw.line([(x0, y0), (x0 + length * math.cos(ang), y0 + length * math.sin(ang))], fill=255, width=w)
        else:
            r = length / 2
            start = math.degrees(ang)
            draw.arc([x0 - r, y0 - r, x0 + r, y0 + r], start, start + rng.uniform(60, 180), fill=255, width=w)


def _scan(mask: Image.Image, rng: np.random.Generator, k: Knobs, size: int) -> np.ndarray:
    """Ink coverage -> a grey scan: resolution, paper and ink, lighting, blur, noise; uint8 (size, size)."""
    res = max(6, int(round(size * rng.uniform(k.lowres, 1.0))))
    low = mask.resize((res, res), Image.Resampling.BOX)
    cover = low.resize((size, size), Image.Resampling.BILINEAR)
    radius = rng.uniform(0, k.blur)
    if radius > 0.05:
        cover = cover.filter(ImageFilter.GaussianBlur(radius))
    cover = np.asarray(cover, dtype=np.float32) / 255.0
    gap = rng.uniform(k.contrast, 0.95) * 255.0
    paper = rng.uniform(0.0, 255.0 - gap)
    ink = paper + gap
    if rng.random() >= k.invert:  # dark ink on light paper
        paper, ink = ink, paper
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1) - 0.5
    ang = rng.uniform(0, 2 * math.pi)
    ramp = (xx * math.cos(ang) + yy * math.sin(ang)) * rng.uniform(0, k.lighting) * 255.0
    img = paper + (ink - paper) * cover + ramp
    img = img + rng.normal(0.0, rng.uniform(0, k.noise), size=img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def render(ch: str, rng: np.random.Generator, spec: Spec, fonts: tuple[Path, ...]) -> Image.Image:
    """One grey image of ``ch`` (mode L, spec.size square)."""
    k, n = spec.knobs, spec.size * SUPERSAMPLE
    font = fonts[int(rng.integers(len(fonts)))]
    stroke = int(round(rng.uniform(0, k.stroke) * SUPERSAMPLE))
    mask = _glyph_mask(ch, font, max(4, int(spec.glyph_height * n)), stroke, n)
    mask = _warp(mask, rng, k)
    _clutter(mask, rng, k, width=SUPERSAMPLE + stroke)
    return Image.fromarray(_scan(mask, rng, k, spec.size))


def image_rng(seed: int, split: str, cls: int, index: int) -> np.random.Generator:
    """The random numbers of one image, independent of how many others are drawn."""
    return np.random.default_rng([seed, SPLITS[split], cls, index])


def generate(out: str | Path, spec: Spec = Spec(), *, overwrite: bool = False) -> dict:
    """Write the dataset under ``out``; returns the manifest (also written to ``out/glyphs.json``)."""
    out = Path(out)
    existing = [out / s for s in SPLITS if (out / s).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{out}: already holds {', '.join(p.name for p in existing)}/; pass overwrite=True "
                              "(--overwrite) to replace them")
    for p in existing:
        shutil.rmtree(p)
    fonts = fonts_for(spec.chars)
    counts = {"train": spec.train, "val": spec.val}
    classes = [class_name(c) for c in spec.chars]
    for split, count in counts.items():
        for ci, (ch, name) in enumerate(zip(spec.chars, classes)):
            folder = out / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                img = render(ch, image_rng(spec.seed, split, ci, i), spec, fonts)
                # no PNG metadata, fixed compression: the same bytes on every run
                img.save(folder / f"{name}_{i:04d}.png", optimize=False, compress_level=6)
    manifest = {
        "generator": "bench.glyphs",
        "spec": dataclasses.asdict(spec),
        "classes": classes,
        "fonts": [f.name for f in fonts],
        "counts": counts,
    }
    (out / "glyphs.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    log.info("%s: %d classes x (%d train + %d val) images of %d px, seed %d, difficulty %g, %d fonts",
             out, len(classes), spec.train, spec.val, spec.size, spec.seed, spec.difficulty, len(fonts))
    return manifest


def spec_from_args(args) -> Spec:
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(Knobs)}
    knobs = Knobs.at(args.difficulty, **overrides)
    return Spec(chars=args.chars, train=args.train, val=args.val, size=args.size, seed=args.seed,
                difficulty=args.difficulty, knobs=knobs)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.glyphs", description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="folder to write (train/ and val/ inside)")
    p.add_argument("--chars", default=DEFAULT_CHARS, help=f"one class per character (default {DEFAULT_CHARS})")
    p.add_argument("--train", type=int, default=32, help="training images per class")
    p.add_argument("--val", type=int, default=50, help="validation images per class")
    p.add_argument("--size", type=int, default=48, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--difficulty", type=float, default=1.0,
                   help="scales every nuisance below from the preset (0: clean glyphs, 1: default)")
    for f in dataclasses.fields(Knobs):
        kind = int if f.type in (int, "int") else float
        p.add_argument(f"--{f.name}", type=kind, default=None, help=f"override (preset {f.default})")
    p.add_argument("--overwrite", action="store_true", help="replace OUT/train and OUT/val if present")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        spec = spec_from_args(args)
        m = generate(args.out, spec, overwrite=args.overwrite)
    except (ValueError, FileExistsError, RuntimeError) as exc:
        p.exit(2, f"python -m bench.glyphs: error: {exc}\n")
    print(json.dumps({"out": str(args.out), "classes": m["classes"], "counts": m["counts"],
                      "knobs": m["spec"]["knobs"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
