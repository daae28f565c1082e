"""One preprocessing for every consumer: the store, training, the strategy, prediction, Grad-CAM, export."""

from __future__ import annotations

import torch

from tl_studio import devices
from tl_studio.data import ImageStore
from tl_studio.predict import Normalized, image_to_input
from tl_studio.preprocess import Normalize, normalize, to_pixels
from tl_studio.registry import get_spec

from .conftest import DATA

COFFEE = DATA / "coffee.jpg"


def test_the_store_and_prediction_make_the_same_pixels():
    p = get_spec("efficientnet_lite0").preprocess
    store = ImageStore([COFFEE], p)
    assert torch.equal(store.tensor[0], image_to_input(COFFEE, p))
    assert store.tensor.shape == (1, 3, p.input_size, p.input_size) and store.tensor.dtype == torch.uint8


def test_normalize_is_the_models_mean_and_std_on_unit_pixels():
    p = get_spec("resnet18").preprocess
    pixels = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    want = (pixels.float() / 255 - torch.tensor(p.mean).view(1, 3, 1, 1)) / torch.tensor(p.std).view(1, 3, 1, 1)
    torch.testing.assert_close(Normalize(p)(pixels), want)
    torch.testing.assert_close(Normalize(p)(pixels.float() / 255), want)  # [0, 1] floats: what exports take
    torch.testing.assert_close(normalize(pixels, p.mean, p.std), want)
    net = Normalized(torch.nn.Identity(), p)
    torch.testing.assert_close(net(pixels), want)


def test_to_pixels_resizes_the_shorter_side_then_crops_the_centre():
    from PIL import Image

    p = get_spec("efficientnet_lite0").preprocess
    img = Image.new("RGB", (600, 300), (10, 20, 30))
    out = to_pixels(img, p)
    assert out.shape == (3, p.input_size, p.input_size) and out.dtype == torch.uint8
    assert out[:, 0, 0].tolist() == [10, 20, 30]


def test_one_device_chooser():
    assert devices.resolve(None) == devices.resolve("auto")
    assert devices.resolve("cpu") == torch.device("cpu")


def test_every_timm_crop_mode_makes_timms_pixels():
    """A timm model's preprocessing (crop_pct, crop_mode, bicubic) is timm's own eval transform."""
    from PIL import Image
    from timm.data import create_transform

    from tl_studio.data.images import load_rgb
    from tl_studio.preprocess import Preprocess

    wide = load_rgb(COFFEE)
    tall = wide.transpose(Image.Transpose.ROTATE_90).crop((0, 0, 300, 420))
    for mode in ("center", "squash", "border"):
        p = Preprocess(224, int(224 / 0.9), "bicubic", (0.5, 0.4, 0.3), (0.2, 0.25, 0.3), crop_pct=0.9, crop_mode=mode)
        theirs = create_transform(input_size=(3, 224, 224), interpolation="bicubic", crop_pct=0.9, crop_mode=mode,
                                  mean=p.mean, std=p.std)
        for img in (wide, tall):
            ours = Normalize(p)(to_pixels(img, p)[None])[0]
            torch.testing.assert_close(ours, theirs(img), atol=1e-5, rtol=0, msg=f"crop_mode {mode}")
