"""Batched augmentation, normalisation and class balancing on tensors."""

from __future__ import annotations

import pytest
import torch

from tl_studio.data import PRESETS, Augment, balanced_sampler, class_weights, normalize


def _batch(b=16, s=24, seed=0):
    return torch.rand(b, 3, s, s, generator=torch.Generator().manual_seed(seed))


def _radial(b=8, s=33):
    """Depends only on the distance from the centre: invariant to rotation about it and to flips."""
    c = torch.linspace(-1, 1, s)
    r = torch.sqrt(c.view(-1, 1) ** 2 + c.view(1, -1) ** 2)
    img = 0.5 + 0.4 * torch.cos(3 * r)
    return img.expand(b, 3, s, s).clone()


def test_presets_and_switches():
    assert Augment.from_preset("none").is_identity
    assert not Augment.from_preset("light").is_identity and not Augment.from_preset("strong").is_identity
    a = Augment.from_preset("strong", rotation=0, color_jitter=0.0)
    assert (a.flip, a.rotation, a.color_jitter, a.random_resized_crop) == (True, 0, 0.0, PRESETS["strong"].random_resized_crop)
    assert Augment.from_preset("light", flip=False, random_resized_crop=None, color_jitter=0).is_identity
    assert Augment(random_resized_crop=1.0).is_identity  # a crop of the whole image is no crop
    with pytest.raises(ValueError, match="augmentation preset: unknown 'wild'; known: none, light, strong"):
        Augment.from_preset("wild")
    with pytest.raises(ValueError, match="unknown switch\\(es\\) blur"):
        Augment.from_preset("light", blur=1)
    with pytest.raises(ValueError, match="rotation: must be between 0 and 180"):
        Augment(rotation=-5)
    with pytest.raises(ValueError, match="color_jitter: must be in \\[0, 1\\)"):
        Augment(color_jitter=1.5)


def test_identity_returns_the_input():
    x = _batch()
    assert Augment.from_preset("none")(x) is x


def test_flip_mirrors_each_sample_or_leaves_it():
    x = _batch(64)
    y = Augment(flip=True)(x, torch.Generator().manual_seed(1))
    same = [(y[i] - x[i]).abs().max().item() < 1e-5 for i in range(64)]
    mirrored = [(y[i] - x[i].flip(-1)).abs().max().item() < 1e-5 for i in range(64)]
    assert all(s != m for s, m in zip(same, mirrored))  # each exactly one of the two
    assert 16 < sum(mirrored) < 48  # per-sample decisions, about half


def test_rotation_turns_about_the_centre():
    x = _radial()
    y = Augment(rotation=90.0, flip=True)(x, torch.Generator().manual_seed(0))
    inner = slice(6, 27)  # the corners of a rotated square come from reflection padding
    assert (y[..., inner, inner] - x[..., inner, inner]).abs().max() < 0.05
    # and it really rotates: a pattern that is not radial moves
    bar = torch.zeros(8, 3, 33, 33)
    bar[..., 14:19, :] = 1.0  # a horizontal bar
    turned = Augment(rotation=90.0)(bar, torch.Generator().manual_seed(0))
    assert (turned - bar).abs().mean(dim=(1, 2, 3)).min() > 0.01


def test_random_resized_crop_zooms_per_sample():
    ramp = torch.linspace(0, 1, 64).expand(32, 3, 64, 64).clone()  # brightness grows left to right
    y = Augment(random_resized_crop=0.25)(ramp, torch.Generator().manual_seed(3))
    span = y[:, 0, 32, -1] - y[:, 0, 32, 0]  # left-right difference shrinks when zoomed in
    assert (span < 1.0 + 1e-5).all() and (span < 0.9).sum() > 16
    assert span.unique().numel() > 16  # different crop per sample
    flat = torch.full((4, 3, 16, 16), 0.3)
    assert torch.allclose(Augment(random_resized_crop=0.1)(flat), flat)


def test_colour_jitter_per_sample_and_in_range():
    grey = torch.rand(32, 1, 16, 16, generator=torch.Generator().manual_seed(0)).expand(32, 3, 16, 16).clone()
    y = Augment(color_jitter=0.4)(grey, torch.Generator().manual_seed(0))
    assert y.min() >= 0 and y.max() <= 1
    assert torch.allclose(y[:, 0], y[:, 1]) and torch.allclose(y[:, 1], y[:, 2])  # grey stays grey
    means = y.mean(dim=(1, 2, 3)) / grey.mean(dim=(1, 2, 3))
    assert means.std() > 0.02  # each sample its own brightness/contrast


def test_seeded_and_reproducible():
    x = _batch()
    aug = Augment.from_preset("strong")
    a = aug(x, torch.Generator().manual_seed(7))
    b = aug(x, torch.Generator().manual_seed(7))
    c = aug(x, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    torch.manual_seed(11)
    d = aug(x)
    torch.manual_seed(11)
    assert torch.equal(d, aug(x))
    with pytest.raises(ValueError, match=r"expected floats in \[0, 1\], got torch.uint8"):
        aug(torch.zeros(1, 3, 4, 4, dtype=torch.uint8))


@pytest.mark.gpu
def test_same_augmentation_on_cuda_as_on_cpu():
    x = _batch(32, 64)
    aug = Augment.from_preset("strong")
    cpu = aug(x, torch.Generator().manual_seed(3))
    gpu = aug(x.cuda(), torch.Generator().manual_seed(3))
    assert gpu.device.type == "cuda"
    assert (gpu.cpu() - cpu).abs().max() < 1e-4
    n = normalize((x * 255).to(torch.uint8).cuda(), (0.5,) * 3, (0.5,) * 3)
    assert n.device.type == "cuda" and n.dtype == torch.float32


def test_normalize():
    x = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 2, 2)
    mean, std = (0.1, 0.2, 0.5), (0.5, 0.25, 0.5)
    y = normalize(x, mean, std)
    want = (torch.tensor([0.0, 0.2, 1.0]) - torch.tensor(mean)) / torch.tensor(std)
    assert y.dtype == torch.float32 and torch.allclose(y[0, :, 0, 0], want)
    assert torch.allclose(normalize(x.float() / 255, mean, std), y)
    with pytest.raises(ValueError, match="expected uint8 or float"):
        normalize(x.to(torch.int32), mean, std)


def test_class_weights_inverse_frequency_mean_one():
    w = class_weights([0, 0, 0, 1], 2)
    assert torch.allclose(w, torch.tensor([0.5, 1.5]))
    w3 = class_weights(torch.tensor([0, 0, 0, 1]), 3)  # class 2 absent
    assert torch.allclose(w3, torch.tensor([0.5, 1.5, 0.0]))
    with pytest.raises(ValueError, match=r"labels: must be in \[0, 2\)"):
        class_weights([0, 2], 2)


def test_balanced_sampler_draws_classes_equally():
    labels = [0] * 90 + [1] * 10
    idx = balanced_sampler(labels, 20000, torch.Generator().manual_seed(0))
    assert idx.dtype == torch.long and len(idx) == 20000
    share = (torch.tensor(labels)[idx] == 1).float().mean().item()
    assert 0.47 < share < 0.53
    assert torch.equal(idx, balanced_sampler(labels, 20000, torch.Generator().manual_seed(0)))
