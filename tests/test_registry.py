"""The model registry: every family builds and lists its layers; weights are where they say."""

import socket
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2 as T

from tl_studio import weights
from tl_studio.layers import layer_table
from tl_studio.registry import EMBEDDED, get_spec, list_models, models_table

from .conftest import DATA

TORCHVISION = [
    "resnet18",
    "resnet50",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "convnext_tiny",
    "vit_b_16",
]


def test_registry_covers_required_models():
    names = list_models()
    assert names[0] == "efficientnet_lite0"
    for n in TORCHVISION:
        assert n in names
    table = models_table()
    # curated models first; timm models found in the Hugging Face cache may follow
    assert list(table["model"])[: len(names)] == names
    assert set(table["family"][len(names):]) <= {"timm"}
    assert table.set_index("model").loc["efficientnet_lite0", "weights"] == EMBEDDED


@pytest.mark.parametrize("name", ["efficientnet_lite0"] + TORCHVISION)
def test_every_family_builds_and_lists_layers(name):
    spec = get_spec(name)
    model = spec.build(pretrained=False)
    coarse = layer_table(name)
    fine = layer_table(name, "fine")
    assert isinstance(coarse, pd.DataFrame)
    assert 8 <= len(coarse) <= 40, len(coarse)
    assert list(coarse["depth"]) == list(range(len(coarse)))
    assert coarse["name"].is_unique and fine["name"].is_unique
    assert len(fine) > len(coarse)
    # Every parameter sits in exactly one row, so "freeze all" freezes all.
    total = sum(p.numel() for p in model.parameters())
    assert coarse["params"].sum() == total
    assert fine["params"].sum() == total
    # The classifier is the last row and outputs the 1000 ImageNet classes.
    last = coarse.iloc[-1]
    assert last["role"] == "classifier" and last["output_shape"] == "1000"
    assert coarse["flops"].sum() > 0 and (coarse["flops"] >= 0).all()
    assert all(coarse["output_shape"].str.len() > 0)
    # The composition of the stages is the model itself.
    x = torch.randn(1, 3, spec.preprocess.input_size, spec.preprocess.input_size)
    model.eval()
    with torch.no_grad():
        y = x
        for st in spec.stages(model):
            y = st.module(y)
        torch.testing.assert_close(y, model(x), rtol=1e-4, atol=1e-4)


def test_vit_class_token_and_position_embedding_have_rows():
    fine = layer_table("vit_b_16", "fine")
    names = set(fine["name"])
    assert "embeddings.class_token" in names and "embeddings.pos_embedding" in names
    coarse = layer_table("vit_b_16")
    assert coarse.set_index("name").loc["embeddings", "params"] == 768 + 197 * 768


def test_preprocessing_comes_from_the_weights():
    assert get_spec("efficientnet_lite0").preprocess.mean == (0.5, 0.5, 0.5)
    r = get_spec("resnet18").preprocess
    assert r.input_size == 224 and r.resize_size == 256 and r.mean[0] == pytest.approx(0.485)
    assert get_spec("efficientnet_b0").preprocess.interpolation == "bicubic"
    assert get_spec("convnext_tiny").preprocess.resize_size == 236


def test_unknown_model_names_the_choices():
    with pytest.raises(KeyError, match="known models: efficientnet_lite0"):
        get_spec("resnet1000")


def _lite0_top(path):
    spec = get_spec("efficientnet_lite0")
    p = spec.preprocess
    tf = T.Compose(
        [
            T.PILToTensor(),
            T.Resize(p.resize_size, antialias=True),
            T.CenterCrop(p.input_size),
            T.ToDtype(torch.float32, scale=True),
            T.Normalize(p.mean, p.std),
        ]
    )
    model = spec.build(pretrained=True).eval()
    with torch.no_grad():
        probs = model(tf(Image.open(path).convert("RGB"))[None]).softmax(-1)[0]
    return int(probs.argmax()), spec.categories


def test_embedded_lite0_is_really_pretrained():
    """Offline (TL_STUDIO_OFFLINE=1), the embedded weights rank the right classes first."""
    idx, cats = _lite0_top(DATA / "coffee.jpg")
    assert cats[idx] == "espresso"
    idx, _ = _lite0_top(DATA / "chelsea_cat.jpg")
    assert 281 <= idx <= 285  # the ImageNet cat classes


def test_lite0_matches_the_reference_package():
    """Our re-declared architecture equals efficientnet-lite-pytorch's on the same weights."""
    from efficientnet_lite_pytorch import EfficientNet

    ref = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=str(__import__("tl_studio.lite0").lite0.weights_path())
    ).eval()
    ours = get_spec("efficientnet_lite0").build(pretrained=True).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-4)


def test_missing_weights_offline_fail_fast_and_clearly(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    spec = get_spec("resnet18")
    assert spec.weights_status() == "download"
    t = time.monotonic()
    with pytest.raises(weights.WeightsUnavailable, match="resnet18-.*not in the local cache"):
        spec.build(pretrained=True)
    assert time.monotonic() - t < 5


def test_unreachable_download_fails_within_seconds(tmp_path, monkeypatch):
    """A real connection attempt to a closed port: a clear error, no hang, no random fallback."""
    monkeypatch.delenv("TL_STUDIO_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends
    url = f"http://127.0.0.1:{port}/models/resnet18-f37072fd.pth"
    t = time.monotonic()
    with pytest.raises(weights.WeightsUnavailable, match="could not be downloaded"):
        weights.download(url, tmp_path / "resnet18-f37072fd.pth", timeout=2)
    assert time.monotonic() - t < 5
    assert not list(tmp_path.iterdir())  # no partial file left behind


def test_cached_weights_are_used(tmp_path, monkeypatch):
    """A file in torch's hub cache is found and loaded (tensors only)."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    spec = get_spec("mobilenet_v3_small")
    ref = spec.build(pretrained=False)
    dest = weights.cache_file(spec.weights_url)
    dest.parent.mkdir(parents=True)
    torch.save(ref.state_dict(), dest)
    assert spec.weights_status() == "cached"
    loaded = spec.build(pretrained=True)
    for a, b in zip(ref.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)


def test_engine_imports_without_gradio():
    code = (
        "import sys, tl_studio.registry, tl_studio.layers, tl_studio.plan, tl_studio.surgery, tl_studio.cli\n"
        "import pkgutil, importlib, tl_studio\n"
        "for m in pkgutil.walk_packages(tl_studio.__path__, 'tl_studio.'):\n"
        "    if not m.name.startswith('tl_studio.ui') and not m.name.endswith('__main__'): importlib.import_module(m.name)\n"
        "assert 'gradio' not in sys.modules, [m for m in sys.modules if 'gradio' in m]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
