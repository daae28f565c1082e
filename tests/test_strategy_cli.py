"""``tl-studio recommend``: slider mode, --data mode on real images, and one-line errors."""

import json

import numpy as np
import pytest
from PIL import Image

from tl_studio.cli import main
from tl_studio.plan import Plan
from tl_studio.surgery import validate


def run(capsys, *argv):
    rc = main(["recommend", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_slider_mode_json(capsys):
    rc, out, _ = run(capsys, "--images-per-class", "20", "--similarity", "0.9", "--num-classes", "5",
                     "--device", "cpu", "--json")
    assert rc == 0
    data = json.loads(out)
    assert data["case"] == "small_similar"
    assert data["similarity"] == 0.9 and data["images_per_class"] == 20
    plan = Plan.from_dict(data["plan"])
    assert plan.model == "efficientnet_lite0" and plan.head.num_classes == 5
    validate(plan)
    assert data["rationale"] and "sweep" not in data


def test_slider_mode_for_people(capsys):
    rc, out, _ = run(capsys, "--images-per-class", "3000", "--similarity", "0.1", "--model", "resnet18",
                     "--device", "cpu")
    assert rc == 0
    assert out.startswith("case: large_different")
    assert "The four cases of" in " ".join(out.split()) and "large and different" in out  # wrapped


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "--images-per-class N and --similarity S, or --data"),
        (["--images-per-class", "10"], "--data"),
        (["--images-per-class", "10", "--similarity", "1.5"], "--similarity: must be in [0, 1]"),
        (["--images-per-class", "-3", "--similarity", "0.5"], "--images-per-class: must be a positive"),
        (["--images-per-class", "10", "--similarity", "0.5", "--sweep"], "--sweep needs images"),
        (["--images-per-class", "10", "--similarity", "0.5", "--model", "nope"], "--model: unknown model"),
        (["--data", "/nonexistent/folder"], "/nonexistent/folder"),
        (["--data", "x", "--similarity", "0.5"], "drop --images-per-class"),
    ],
)
def test_bad_input_is_one_line(capsys, argv, message):
    rc, out, err = run(capsys, *argv)
    assert rc == 2
    assert out == ""
    assert err.count("\n") == 1 and message in err


def _tiny_dataset(root):
    """Two classes of real photo crops (coffee, cat), 8 images each, as JPEG files."""
    import skimage.data

    rng = np.random.default_rng(0)
    for name in ("coffee", "chelsea"):
        img = getattr(skimage.data, name)()
        h, w = img.shape[:2]
        (root / name).mkdir(parents=True)
        for i in range(8):
            side = int(min(h, w) * rng.uniform(0.6, 0.95))
            y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
            Image.fromarray(img[y : y + side, x : x + side]).resize((96, 96)).save(root / name / f"{i}.jpg")
    return root


def test_data_mode_measures_and_sweeps(capsys, tmp_path):
    data = _tiny_dataset(tmp_path / "photos")
    rc, out, err = run(capsys, "--data", str(data), "--sweep", "--device", "cpu", "--json")
    assert rc == 0, err
    result = json.loads(out)
    for key in ("case", "plan", "similarity", "similarity_measured", "transferability", "rationale", "evidence"):
        assert key in result
    assert result["similarity"] == result["similarity_measured"] and result["basis"] == "evidence"
    assert result["num_classes"] == 2
    assert result["case"].startswith("small")
    # The probe curve, measured on the training split only, travels with the plan.
    assert {"layer", "index", "accuracy", "se", "feature_dim"} <= set(result["evidence"]["curve"][0])
    assert result["evidence"]["selected_on"] == "train-cv"
    validate(Plan.from_dict(result["plan"]))
