"""Make the demo dataset in assets/demo/ from photos that ship with scikit-image.

Four classes of real photographs, "different from ImageNet" textures:
brick, grass, gravel (CC0 textures) and deep_field (the Hubble eXtreme Deep
Field, public domain, NASA).

No image region is in both training and validation: every source image is cut
into two bands that never overlap. Validation tiles come from the bottom
quarter of each source, training tiles from the top three quarters. Within
its band a tile is a crop of random position and size (so training tiles vary
in scale, as photos do), resized to 144 px and saved as JPEG.

    python assets/make_demo.py          # rewrites assets/demo/train, assets/demo/val, LICENSE.md
    python assets/make_demo.py --check  # linear probe on frozen EfficientNet-Lite0 features

The check fits a logistic regression on the pooled features of the frozen,
ImageNet-pretrained EfficientNet-Lite0 (what "train only a new head" learns)
and prints the validation accuracy; it must be at least 0.9. Measured when the
set was made: 1.0 (40/40) for C in 0.01, 0.1 and 1.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

OUT = Path(__file__).resolve().parent / "demo"
TILE = 144
TRAIN_PER_CLASS = 40
VAL_PER_CLASS = 10
VAL_BAND = 0.25  # bottom quarter of each source image
SEED = 0

SOURCES = {
    "brick": (
        data.brick,
        "scikit-image `skimage.data.brick()`: a brick wall, from CC0Textures "
        "(https://cc0textures.com/view.php?tex=Bricks25), CC0 1.0 Universal.",
    ),
    "grass": (
        data.grass,
        "scikit-image `skimage.data.grass()`: grass, from DeviantArt user linolafett "
        "(https://www.deviantart.com/linolafett/art/Grass-01-434853879), CC0 1.0 Universal.",
    ),
    "gravel": (
        data.gravel,
        "scikit-image `skimage.data.gravel()`: gravel, from CC0Textures "
        "(https://cc0textures.com/view.php?tex=Gravel04), CC0 1.0 Universal.",
    ),
    "deep_field": (
        data.hubble_deep_field,
        "scikit-image `skimage.data.hubble_deep_field()`: the Hubble eXtreme Deep Field "
        "(http://hubblesite.org/newscenter/archive/releases/2012/37/image/a/), "
        "NASA, public domain.",
    ),
}


def crops(band: np.ndarray, n: int, min_side: int, max_side: int, rng: np.random.Generator):
    """``n`` square crops of random size and position, all inside ``band``."""
    h, w = band.shape[:2]
    max_side = min(max_side, h, w)
    for _ in range(n):
        side = int(rng.integers(min_side, max_side + 1))
        y = int(rng.integers(0, h - side + 1))
        x = int(rng.integers(0, w - side + 1))
        yield band[y : y + side, x : x + side]


def save(tile: np.ndarray, path: Path) -> None:
    img = Image.fromarray(tile)  # grayscale textures stay grayscale ("L") JPEGs
    img = img.resize((TILE, TILE), Image.Resampling.LANCZOS)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, "JPEG", quality=88, optimize=True)


def main() -> None:
    rng = np.random.default_rng(SEED)
    for sub in ("train", "val"):
        shutil.rmtree(OUT / sub, ignore_errors=True)
    for name, (load, _) in SOURCES.items():
        img = load()
        h = img.shape[0]
        cut = int(round(h * (1 - VAL_BAND)))
        train_band, val_band = img[:cut], img[cut:]  # disjoint rows: no shared region
        side = min(img.shape[:2])
        for i, t in enumerate(crops(train_band, TRAIN_PER_CLASS, side // 5, side * 3 // 8, rng)):
            save(t, OUT / "train" / name / f"{name}_{i:02d}.jpg")
        for i, t in enumerate(crops(val_band, VAL_PER_CLASS, side // 6, side // 4, rng)):
            save(t, OUT / "val" / name / f"{name}_{i:02d}.jpg")
    write_licence()


def write_licence() -> None:
    lines = [
        "# Demo dataset: sources and licences",
        "",
        "Made by `assets/make_demo.py` from photographs that ship with scikit-image",
        f"(https://scikit-image.org). Each class is {TRAIN_PER_CLASS} training and {VAL_PER_CLASS} validation",
        f"tiles of {TILE}x{TILE} px cut from one source photograph. Validation tiles come only",
        f"from the bottom {int(VAL_BAND * 100)}% of the rows of the source, training tiles only from the rest,",
        "so no image region is in both training and validation.",
        "",
        "| class | source image and licence |",
        "|---|---|",
    ]
    lines += [f"| {name} | {text} |" for name, (_, text) in SOURCES.items()]
    lines += [
        "",
        "The tiles are crops, resizes and JPEG re-encodings of these images; they are",
        "released under the same terms (CC0 1.0 Universal / public domain).",
        "",
    ]
    (OUT / "LICENSE.md").write_text("\n".join(lines), encoding="utf-8")


def check() -> float:
    """Validation accuracy of a linear probe on frozen EfficientNet-Lite0 features."""
    import torch
    from sklearn.linear_model import LogisticRegression

    from tl_studio.data import ImageStore, load_dataset, normalize
    from tl_studio.plan import Plan
    from tl_studio.registry import get_spec
    from tl_studio.surgery import build_model

    ds = load_dataset(OUT)
    pre = get_spec("efficientnet_lite0").preprocess
    store = ImageStore(ds.paths, pre)
    model = build_model(Plan.head_only("efficientnet_lite0", len(ds.classes)), class_names=ds.classes).eval()
    with torch.inference_mode():
        batches = store.batches(range(len(store)), 50, shuffle=False)
        feats = torch.cat([model.features(normalize(x, pre.mean, pre.std)) for x, _ in batches]).numpy()
    y = np.array(ds.labels)
    clf = LogisticRegression(max_iter=2000, C=0.1).fit(feats[ds.train_idx], y[ds.train_idx])
    acc = float(clf.score(feats[ds.val_idx], y[ds.val_idx]))
    print(
        "linear probe on frozen efficientnet_lite0 features: "
        f"validation accuracy {acc:.3f} ({len(ds.val_idx)} images)"
    )
    return acc


if __name__ == "__main__":
    import sys

    if "--check" in sys.argv[1:]:
        sys.exit(0 if check() >= 0.9 else 1)
    main()
