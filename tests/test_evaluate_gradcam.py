"""Grad-CAM on real models: it finds the object, returns the image's size, and degrades for ViT."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image

from tl_studio.evaluate import GradCAMUnavailable, gradcam
from tl_studio.plan import Plan
from tl_studio.surgery import build_model

from .conftest import DATA
from .trainkit import DEMO

PATCH = 160


def brick_on_blank(corner: tuple[int, int], size=(400, 400), index: int = 1) -> Image.Image:
    """A brick texture in one corner of a flat grey canvas: only the patch can explain 'brick'."""
    canvas = Image.new("RGB", size, (128, 128, 128))
    with Image.open(DEMO / "val" / "brick" / f"brick_{index:02d}.jpg") as tex:
        canvas.paste(tex.convert("RGB").resize((PATCH, PATCH)), corner)
    return canvas


@pytest.mark.parametrize("corner", [(0, 0), (240, 240)])
def test_heatmap_has_the_image_size_and_peaks_inside_the_object(lite0_run, corner):
    run, _ = lite0_run
    image = brick_on_blank(corner)
    res = gradcam(run, image, target="brick")
    assert res.heatmap.shape == (400, 400) and res.heatmap.dtype == np.float32
    assert res.heatmap.min() >= 0.0 and 0.9 <= res.heatmap.max() <= 1.0
    assert res.target_label == "brick" and res.layer == "conv_head" and res.method == "grad-cam"
    y, x = np.unravel_index(res.heatmap.argmax(), res.heatmap.shape)
    x0, y0 = corner
    assert x0 <= x < x0 + PATCH and y0 <= y < y0 + PATCH, (x, y)
    # most of the evidence lies on the patch, which covers 16% of the picture
    inside = res.heatmap[y0 : y0 + PATCH, x0 : x0 + PATCH].sum()
    assert inside / res.heatmap.sum() > 0.4
    assert res.overlay.size == image.size and res.overlay.mode == "RGB"
    # the default target is the prediction, and it is brick here
    assert gradcam(run, image).target_label == "brick"


def test_outside_the_centre_crop_the_heatmap_is_zero():
    # 3:2 landscape: the model sees only the centre square, so the side bands carry no heat
    model = build_model(Plan.head_only("resnet18", 3), pretrained=False)
    image = Image.open(DATA / "chelsea_cat.jpg")  # 451x300
    res = gradcam(model, image)
    assert res.heatmap.shape == (300, 451) and res.layer == "layer4.1"
    band = (451 - 300 * 224 / 256) / 2  # ~62 px each side
    assert res.heatmap[:, : int(band) - 1].max() == 0 and res.heatmap[:, -int(band) + 1 :].max() == 0
    assert res.heatmap[:, int(band) + 2 : -int(band) - 2].max() > 0.5
    # a path works as well as a PIL image, and a layer inside a kept block can be named
    res = gradcam(model, DATA / "chelsea_cat.jpg", layer="layer3.0.conv1", target=2)
    assert res.layer == "layer3.0.conv1" and res.target_index == 2 and res.heatmap.shape == (300, 451)


@pytest.mark.parametrize(
    "name, layer",
    [("mobilenet_v3_small", "features.12"), ("efficientnet_b0", "features.8"), ("convnext_tiny", "features.7.2")],
)
def test_every_cnn_family_picks_its_last_spatial_stage(name, layer):
    model = build_model(Plan.head_only(name, 2), pretrained=False)
    res = gradcam(model, np.full((120, 160, 3), 90, np.uint8))  # a webcam-style array
    assert res.layer == layer and res.heatmap.shape == (120, 160)
    assert np.isfinite(res.heatmap).all() and res.heatmap.max() <= 1.0


def test_cut_and_tapped_plans_explain_the_last_kept_map():
    plan = Plan.head_only("resnet18", 2, taps=["layer2.1", "layer3.1"])
    res = gradcam(build_model(plan, pretrained=False), brick_on_blank((0, 0)))
    assert res.layer == "layer3.1"


def test_bad_layer_and_target_get_clear_messages():
    model = build_model(Plan.head_only("resnet18", 3), pretrained=False)
    img = brick_on_blank((0, 0))
    with pytest.raises(GradCAMUnavailable, match=r"layer 'pool' outputs 512, not a spatial"):
        gradcam(model, img, layer="pool")
    with pytest.raises(ValueError, match=r"layer: 'layer9' is not in the kept body"):
        gradcam(model, img, layer="layer9")
    with pytest.raises(ValueError, match=r"target: unknown class 'dog'"):
        gradcam(model, img, target="dog")


def test_vit_degrades_to_attention_rollout_or_a_plain_message():
    from tl_studio.registry import get_spec
    from tl_studio.surgery import TransferModel

    base = get_spec("vit_b_16").build(pretrained=False)  # random weights: no download
    model = TransferModel(Plan.head_only("vit_b_16", 2), base)
    image = Image.open(DATA / "coffee.jpg")
    res = gradcam(model, image)
    assert res.method == "attention rollout"
    assert res.heatmap.shape == (image.height, image.width)
    assert 0.0 <= res.heatmap.min() and res.heatmap.max() <= 1.0 and res.heatmap.max() > 0.5
    # asking for Grad-CAM on a token layer: a plain refusal, not a crash
    with pytest.raises(GradCAMUnavailable, match="not a spatial"):
        gradcam(model, image, layer="encoder.3")
    # a ViT cut before any attention layer has nothing to follow (same base modules, no second init)
    cut = TransferModel(Plan.head_only("vit_b_16", 2, cut_after="embeddings"), base)
    with pytest.raises(GradCAMUnavailable, match="token sequences"):
        gradcam(cut, image)


def test_concurrent_explanations_on_one_model_do_not_mix(lite0_run):
    run, _ = lite0_run
    images = [brick_on_blank((0, 0)), brick_on_blank((240, 240))]
    expected = [gradcam(run, im, target="brick").heatmap for im in images]
    results: dict[int, np.ndarray] = {}
    errors = []

    def work(i):
        try:
            for _ in range(3):
                results[i] = gradcam(run, images[i % 2], target="brick").heatmap
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, heat in results.items():
        assert np.allclose(heat, expected[i % 2], atol=1e-5)
