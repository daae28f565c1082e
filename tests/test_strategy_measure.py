"""Measured similarity, LogME and the freeze-depth sweep on real images with the real pretrained Lite0.

The datasets are made here from the real images scikit-image and
scikit-learn ship: crops of everyday-object photos (ImageNet's kind of
images), crops of texture photos, and upscaled handwritten digits.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from tl_studio.strategy import freeze_depth_sweep, measure_similarity
from tl_studio.strategy.features import imagenet_pass, pooled_features
from tl_studio.strategy.logme import logme
from tl_studio.strategy.sweep import candidate_layers, ridge_probe
from tl_studio.surgery import body_layer_names

MODEL = "efficientnet_lite0"  # embedded ImageNet weights: works offline
DEMO = Path(__file__).resolve().parents[1] / "assets" / "demo"


def _crops(img: np.ndarray, n: int, rng, scale=(0.55, 0.95), size=224) -> torch.Tensor:
    """n square crops (random side and place, every other one mirrored), resized to size."""
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    t = torch.from_numpy(np.ascontiguousarray(img[..., :3])).permute(2, 0, 1).float()
    h, w = t.shape[1:]
    out = []
    for i in range(n):
        side = int(min(h, w) * rng.uniform(*scale))
        y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        c = t[:, y : y + side, x : x + side]
        if i % 2:
            c = c.flip(-1)
        out.append(F.interpolate(c[None], size=(size, size), mode="bilinear", antialias=True)[0])
    return torch.stack(out).round().clamp(0, 255).to(torch.uint8)


def _from_skimage(names, per_class, seed, scale):
    import skimage.data

    rng = np.random.default_rng(seed)
    x = torch.cat([_crops(getattr(skimage.data, n)(), per_class, rng, scale) for n in names])
    return x, torch.arange(len(names)).repeat_interleave(per_class)


def photos(per_class=6):
    """Everyday objects: ImageNet has espresso, tabby cat, space shuttle/missile classes."""
    return _from_skimage(["coffee", "chelsea", "astronaut", "rocket"], per_class, 0, (0.55, 0.95))


def textures(per_class=8):
    return _from_skimage(["brick", "grass", "gravel"], per_class, 1, (0.25, 0.6))


def digits(per_class=3):
    from sklearn.datasets import load_digits

    ds = load_digits()
    idx = np.concatenate([np.flatnonzero(ds.target == k)[:per_class] for k in range(10)])
    x = torch.tensor(ds.images[idx], dtype=torch.float32)[:, None] / 16.0 * 255.0
    x = 255.0 - x  # dark ink on light paper, as scanned
    x = F.interpolate(x, size=(224, 224), mode="bilinear").repeat(1, 3, 1, 1)
    return x.round().clamp(0, 255).to(torch.uint8), torch.tensor(ds.target[idx])


@pytest.fixture(scope="module")
def reports():
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    return {name: measure_similarity(MODEL, *make(), device="cpu") for name, make in
            [("photos", photos), ("textures", textures), ("digits", digits)]}


def test_similarity_ranks_real_images(reports):
    p, t, d = reports["photos"], reports["textures"], reports["digits"]
    for r in reports.values():
        assert 0.0 <= r.similarity <= 1.0
        assert {"mean_max_softmax", "normalised_entropy", "bn_kl_mean"} <= set(r.signals)
        assert "Similarity" in r.explanation and "LogME" in r.explanation
    # photos of everyday objects are clearly more ImageNet-like than digits or textures
    assert p.similarity >= 0.5 > max(t.similarity, d.similarity)
    assert p.similarity - t.similarity > 0.2
    assert p.similarity - d.similarity > 0.3
    # both raw signals agree on the order
    assert p.signals["normalised_entropy"] < t.signals["normalised_entropy"]
    assert p.signals["normalised_entropy"] < d.signals["normalised_entropy"]
    assert p.signals["bn_kl_mean"] < t.signals["bn_kl_mean"] < d.signals["bn_kl_mean"]


def test_transferability_differs_from_similarity(reports):
    p, t, d = reports["photos"], reports["textures"], reports["digits"]
    # textures: far from ImageNet, yet the frozen features separate brick, grass and gravel
    assert t.similarity < 0.5
    assert t.transferability_normalised > 0.9
    assert t.transferability > d.transferability + 0.5
    # digits: far from ImageNet and harder to separate with frozen ImageNet features
    assert d.transferability_normalised < t.transferability_normalised
    assert p.transferability_normalised > 0.9


def test_imagenet_head_is_really_pretrained():
    x, _ = photos(per_class=1)  # coffee, cat, astronaut, rocket
    top = imagenet_pass(MODEL, x[:2], device="cpu")["logits"].argmax(1).tolist()
    assert top[0] == 967  # espresso
    assert 281 <= top[1] <= 285  # one of the domestic cats


def test_pooled_features_agree_with_the_whole_network():
    x, _ = photos(per_class=1)
    feats = pooled_features(MODEL, x, ["blocks.3", "pool"], batch_size=3, device="cpu")
    assert list(feats) == ["blocks.3", "pool"]
    assert feats["blocks.3"].shape == (4, 40)
    whole = imagenet_pass(MODEL, x, device="cpu")["features"]
    torch.testing.assert_close(feats["pool"], whole, rtol=1e-4, atol=1e-4)


# ---- LogME against the paper's reference code ------------------------------------------------
def _logme_reference(f: np.ndarray, y: np.ndarray) -> float:
    """You et al.'s published LogME (fixed-point iteration on the D x D Gram matrix), run to convergence."""
    fh, ft = f, f.T
    d, n = ft.shape
    v, s, vh = np.linalg.svd(ft @ fh, full_matrices=True)
    out = []
    for k in np.unique(y):
        y_ = (y == k).astype(np.float64)
        alpha, beta, eps = 1.0, 1.0, 1e-5
        tmp = vh @ (ft @ y_)
        for _ in range(10000):
            gamma = (beta * s / (alpha + beta * s)).sum()
            m = v @ (tmp * beta / (alpha + beta * s))
            alpha_de = (m * m).sum()
            beta_de = ((y_ - fh @ m) ** 2).sum()
            new_alpha, new_beta = gamma / (alpha_de + eps), (n - gamma) / (beta_de + eps)
            done = abs(new_alpha - alpha) / alpha < 1e-10 and abs(new_beta - beta) / beta < 1e-10
            alpha, beta = new_alpha, new_beta
            if done:
                break
        m = v @ (tmp * beta / (alpha + beta * s))
        evidence = (
            d / 2 * np.log(alpha) + n / 2 * np.log(beta) - 0.5 * np.sum(np.log(alpha + beta * s))
            - beta / 2 * ((y_ - fh @ m) ** 2).sum() - alpha / 2 * (m * m).sum() - n / 2 * np.log(2 * np.pi)
        )
        out.append(evidence / n)
    return float(np.mean(out))


@pytest.mark.parametrize("n, d", [(200, 20), (30, 100), (60, 60)])
def test_logme_matches_the_reference(n, d):
    rng = np.random.default_rng(n + d)
    y = rng.integers(0, 3, n)
    f = rng.normal(size=(n, d)) + y[:, None] * rng.normal(size=d)
    ours = logme(torch.tensor(f), torch.tensor(y))
    assert ours.logme == pytest.approx(_logme_reference(f, y), abs=2e-3)
    # informative features score higher than the same features with shuffled labels
    assert ours.logme > logme(torch.tensor(f), torch.tensor(rng.permutation(y))).logme
    assert 0.0 <= ours.explained <= 1.0


def test_ridge_probe_separates_and_does_not_invent():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 16, generator=g) * 3
    y = torch.arange(90) % 3
    x = centres[y] + torch.randn(90, 16, generator=g)
    good = ridge_probe(x[:60], y[:60], x[60:], y[60:], 3)
    assert good["val_accuracy"] == 1.0
    noise = torch.randn(90, 16, generator=g)
    bad = ridge_probe(noise[:60], y[:60], noise[60:], y[60:], 3)
    assert bad["val_accuracy"] < 0.7


# ---- the freeze-depth sweep ----------------------------------------------------------------------
def test_candidate_layers_spread_and_end_at_the_last_layer():
    for model in ("efficientnet_lite0", "resnet18", "mobilenet_v3_small"):
        names = candidate_layers(model)
        body = body_layer_names(model)
        assert 6 <= len(names) <= 10
        assert names[-1] == body[-1]
        assert [body.index(n) for n in names] == sorted(body.index(n) for n in names)


def _demo_tensors():
    from tl_studio.data import ImageStore, load_dataset
    from tl_studio.registry import get_spec

    ds = load_dataset(DEMO)
    store = ImageStore(ds.paths, get_spec(MODEL).preprocess)
    labels = torch.tensor(ds.labels)
    tr, va = torch.tensor(ds.train_idx), torch.tensor(ds.val_idx)
    return store.tensor[tr], labels[tr], store.tensor[va], labels[va], len(ds.classes)


@pytest.mark.skipif(not (DEMO / "train").is_dir(), reason="the demo dataset is not in assets/demo")
def test_sweep_on_the_demo_dataset():
    tx, ty, vx, vy, k = _demo_tensors()
    sweep = freeze_depth_sweep(MODEL, tx, ty, vx, vy, device="cpu")
    body = body_layer_names(MODEL)
    assert list(sweep.columns[:6]) == ["depth", "layer", "position", "feature_dim", "train_accuracy", "val_accuracy"]
    assert 6 <= len(sweep) <= 10
    assert sweep["layer"].iloc[-1] == body[-1]
    assert sweep["depth"].tolist() == [body.index(n) for n in sweep["layer"]]
    assert sweep["position"].is_monotonic_increasing
    assert sweep["val_accuracy"].between(0, 1).all()
    # frozen ImageNet features separate the demo classes far above chance from mid-depth on
    assert sweep["val_accuracy"].max() >= 0.9
    assert sweep["val_accuracy"].iloc[-1] > 2.0 / k
    assert (sweep["feature_dim"] > 0).all()


def test_sweep_and_similarity_refuse_bad_input():
    x, y = photos(per_class=1)
    with pytest.raises(ValueError, match="dtype uint8"):
        measure_similarity(MODEL, x.float(), y, device="cpu")
    with pytest.raises(ValueError, match="labels"):
        measure_similarity(MODEL, x, y[:2], device="cpu")
    with pytest.raises(ValueError, match="train_images"):
        freeze_depth_sweep(MODEL, x[:, :1], y, x, y, device="cpu")
    with pytest.raises(ValueError, match="depths: 'layer9'"):
        freeze_depth_sweep(MODEL, x, y, x, y, depths=["layer9"], device="cpu")
